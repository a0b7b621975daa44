package telemetry

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultMaxSeries bounds the number of distinct label sets per metric
// family (HTTP and TCP each). Further label sets are counted in one
// overflow series whose labels are all "overflow".
const DefaultMaxSeries = 10000

// MetricsConfig configures a Metrics sink.
type MetricsConfig struct {
	// Workload is the local workload (source of outbound, destination of
	// inbound traffic).
	Workload Workload
	// Version is reported by istio_build.
	Version string
	// MaxSeries bounds label cardinality; 0 means DefaultMaxSeries.
	MaxSeries int
}

// Metrics is a Sink that counts requests and connections under Istio's
// metric names. Recording is lock-free and allocation-free once a label
// set has been seen: series live in a copy-on-write map keyed by a small
// comparable struct, read with one atomic load; only a new label set takes
// the mutex (and allocates its label values). Prometheus reads the
// counters on scrape through Collector.
type Metrics struct {
	cfg MetricsConfig

	http seriesMap[httpKey, httpSeries]
	tcp  seriesMap[tcpKey, tcpSeries]

	// Sources read on scrape (SetClusterSource, SetXDSSource,
	// SetListenerSource, SetServerSource).
	mu        sync.Mutex
	clusters  func() []ClusterStats
	xds       func() XDSStats
	listeners func() []ListenerStats
	server    func() ServerStats
	// extra are other packages' collectors (AddCollector).
	extra collectorList
}

// NewMetrics returns a metrics sink.
func NewMetrics(cfg MetricsConfig) *Metrics {
	if cfg.MaxSeries <= 0 {
		cfg.MaxSeries = DefaultMaxSeries
	}
	m := &Metrics{cfg: cfg}
	m.http.max, m.tcp.max = cfg.MaxSeries, cfg.MaxSeries
	m.http.overflow = httpKey{overflow: true}
	m.tcp.overflow = tcpKey{overflow: true}
	return m
}

// httpKey is what distinguishes request series. Its strings come from
// configuration (listener, cluster), the connection (principal) or
// constants (flags), never from request buffers, so they may be kept.
type httpKey struct {
	listener, cluster, principal, flags string
	code, grpcStatus                    int32
	grpc, overflow                      bool
}

type httpSeries struct {
	labels              []string
	requests            atomic.Uint64
	upstreamRq, retries atomic.Uint64 // per-cluster stats, summed on scrape
	duration            histogram     // µs
	reqBytes, respBytes histogram
	// gRPC messages each way (gRPC series only).
	reqMsgs, respMsgs atomic.Uint64
}

// tcpKey distinguishes TCP connection series.
type tcpKey struct {
	listener, cluster, principal, flags string
	overflow                            bool
}

type tcpSeries struct {
	labels                 []string
	opened, closed, failed atomic.Uint64
	received, sent         atomic.Uint64
}

// HTTPDone counts a finished request.
func (m *Metrics) HTTPDone(r *HTTPRecord) {
	k := httpKey{
		listener:   r.Listener,
		cluster:    r.UpstreamCluster,
		principal:  r.PeerPrincipal,
		flags:      r.ResponseFlags,
		code:       int32(r.ResponseCode),
		grpcStatus: int32(r.GRPCStatus),
		grpc:       r.GRPC,
	}
	s := m.http.get(k, m.newHTTPSeries)
	s.requests.Add(1)
	if r.Attempts > 0 {
		s.upstreamRq.Add(uint64(r.Attempts))
		s.retries.Add(uint64(r.Attempts - 1))
	}
	s.duration.observe(&microsBounds, uint64(r.Duration/time.Microsecond))
	s.reqBytes.observe(&bytesBounds, uint64(max(r.BytesReceived, 0)))
	s.respBytes.observe(&bytesBounds, uint64(max(r.BytesSent, 0)))
	if r.GRPC {
		s.reqMsgs.Add(r.RequestMessages)
		s.respMsgs.Add(r.ResponseMessages)
	}
}

// TCPOpened counts an established tcp_proxy connection.
func (m *Metrics) TCPOpened(r *TCPRecord) {
	m.tcp.get(tcpKeyOf(r), m.newTCPSeries).opened.Add(1)
}

// TCPDone counts a finished tcp_proxy connection: closed with its bytes,
// or failed when it never connected upstream.
func (m *Metrics) TCPDone(r *TCPRecord) {
	s := m.tcp.get(tcpKeyOf(r), m.newTCPSeries)
	if !r.Connected {
		s.failed.Add(1)
		return
	}
	s.closed.Add(1)
	s.received.Add(uint64(max(r.BytesReceived, 0)))
	s.sent.Add(uint64(max(r.BytesSent, 0)))
}

func tcpKeyOf(r *TCPRecord) tcpKey {
	// Flags are part of the key only for failures: an open connection's
	// series must be the one its close is counted in.
	k := tcpKey{listener: r.Listener, cluster: r.UpstreamCluster, principal: r.PeerPrincipal}
	if !r.Connected {
		k.flags = r.ResponseFlags
	}
	return k
}

func (m *Metrics) newHTTPSeries(k httpKey) *httpSeries {
	if k.overflow {
		return &httpSeries{labels: overflowLabels(len(httpLabels))}
	}
	proto := "http"
	if k.grpc {
		proto = "grpc"
	}
	v := m.peerLabels(k.listener, k.cluster, k.principal, k.flags, proto, k.principal != "")
	grpcStatus := "-"
	if k.grpcStatus >= 0 {
		grpcStatus = strconv.Itoa(int(k.grpcStatus))
	}
	v = append(v, strconv.Itoa(int(k.code)), grpcStatus)
	return &httpSeries{labels: v}
}

func (m *Metrics) newTCPSeries(k tcpKey) *tcpSeries {
	if k.overflow {
		return &tcpSeries{labels: overflowLabels(len(istioLabels))}
	}
	return &tcpSeries{labels: m.peerLabels(k.listener, k.cluster, k.principal, k.flags, "tcp", k.principal != "")}
}

func overflowLabels(n int) []string {
	v := make([]string, n)
	for i := range v {
		v[i] = "overflow"
	}
	return v
}

// seriesMap is a copy-on-write map: lookups are one atomic load and a map
// read; inserts copy the map under mu. Label sets are few and long-lived,
// so inserts are rare.
type seriesMap[K comparable, S any] struct {
	m        atomic.Pointer[map[K]*S]
	mu       sync.Mutex
	max      int
	overflow K
}

func (sm *seriesMap[K, S]) get(k K, mk func(K) *S) *S {
	if p := sm.m.Load(); p != nil {
		if s, ok := (*p)[k]; ok {
			return s
		}
	}
	return sm.insert(k, mk)
}

func (sm *seriesMap[K, S]) insert(k K, mk func(K) *S) *S {
	sm.mu.Lock()
	defer sm.mu.Unlock()
	var old map[K]*S
	if p := sm.m.Load(); p != nil {
		old = *p
	}
	if s, ok := old[k]; ok {
		return s
	}
	if len(old) >= sm.max {
		k = sm.overflow
		if s, ok := old[k]; ok {
			return s
		}
	}
	k = cloneKey(k)
	s := mk(k)
	next := make(map[K]*S, len(old)+1)
	for kk, v := range old {
		next[kk] = v
	}
	next[k] = s
	sm.m.Store(&next)
	return s
}

// cloneKey copies the strings of a key so a key never pins a caller's
// buffer, whatever its origin.
func cloneKey[K comparable](k K) K {
	switch v := any(k).(type) {
	case httpKey:
		v.listener, v.cluster = strings.Clone(v.listener), strings.Clone(v.cluster)
		v.principal, v.flags = strings.Clone(v.principal), strings.Clone(v.flags)
		return any(v).(K)
	case tcpKey:
		v.listener, v.cluster = strings.Clone(v.listener), strings.Clone(v.cluster)
		v.principal, v.flags = strings.Clone(v.principal), strings.Clone(v.flags)
		return any(v).(K)
	}
	return k
}

// snapshot returns the current series (for scrapes and tests).
func (sm *seriesMap[K, S]) snapshot() map[K]*S {
	if p := sm.m.Load(); p != nil {
		return *p
	}
	return nil
}
