package upstream

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

// Manager keeps one Cluster per cluster in the current snapshot.
type Manager struct {
	log      *slog.Logger
	clusters atomic.Pointer[map[string]*Cluster]
	tunnel   atomic.Pointer[TunnelDialer]
	store    *state.Store
	local    atomic.Pointer[localSource] // the proxy's identity (SetIdentity)
	marks    markState                   // SO_MARK on dialed sockets (mark.go)

	mu   sync.Mutex // serializes reconcile
	live map[string]*Cluster
}

// NewManager returns a Manager following store.
func NewManager(store *state.Store, log *slog.Logger) *Manager {
	if log == nil {
		log = slog.Default()
	}
	m := &Manager{log: log, live: map[string]*Cluster{}, store: store}
	m.marks.log = log
	empty := map[string]*Cluster{}
	m.clusters.Store(&empty)
	store.Watch(func(_, next *state.Snapshot) { m.reconcile(next) })
	return m
}

// Cluster returns the named cluster, or nil when it does not exist (503 NC).
func (m *Manager) Cluster(name string) *Cluster {
	return (*m.clusters.Load())[name]
}

// Close stops DNS resolvers and closes all pools.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.live {
		c.close()
	}
	m.live = map[string]*Cluster{}
	empty := map[string]*Cluster{}
	m.clusters.Store(&empty)
}

func (m *Manager) reconcile(snap *state.Snapshot) {
	m.mu.Lock()
	defer m.mu.Unlock()
	next := make(map[string]*Cluster, len(snap.Clusters))
	for name, spec := range snap.Clusters {
		c := m.live[name]
		if c != nil && c.dnsKey() != dnsKeyOf(spec) {
			// DNS target changed: restart the resolver with a fresh cluster
			// object so the old resolver cannot publish stale hosts.
			c.close()
			c = nil
		}
		if c == nil {
			c = newCluster(spec, m.log)
			c.tunnel = &m.tunnel
			c.marks = &m.marks
			c.ident = Identity{Store: m.store, Local: managerLocal{m}}
		}
		c.update(spec, snap.EndpointsFor(spec))
		next[name] = c
	}
	for name, c := range m.live {
		if next[name] == nil {
			c.close()
		}
	}
	m.live = next
	m.clusters.Store(&next)
}

// Cluster is the runtime of one xDS cluster.
type Cluster struct {
	Name string
	LB   *lb.Balancer
	log  *slog.Logger

	spec atomic.Pointer[state.Cluster]
	// transport holds the compiled transport sockets (nil: plaintext).
	transport atomic.Pointer[transportSet]
	ident     Identity
	// internal maps the address of each envoy_internal_address endpoint to
	// its internal listener's name, so such a host is never dialed
	// directly when the cluster lacks the tunnel config (tunnel.go).
	internal atomic.Pointer[map[string]string]

	tunnel  *atomic.Pointer[TunnelDialer] // the Manager's; HBONE clusters dial through it
	marks   *markState                    // the Manager's socket mark (mark.go)
	od      *detector
	cb      *breaker
	hc      *healthChecker
	traffic atomic.Bool // any request or connection seen (no_traffic_interval)
	// hostMu serializes host-set changes (xDS updates and the DNS
	// resolver) so the balancer, the detector and the health checker see
	// them in one order.
	hostMu sync.Mutex

	mu        sync.Mutex
	endpoints map[*lb.Host]*Endpoint
	// named holds the per-name endpoints of auto_sni clusters (sni.go).
	named    map[*lb.Host]map[string]*Endpoint
	stopDNS  context.CancelFunc
	resolved *state.ClusterLoadAssignment // last DNS result
	closed   bool

	orig origDst // ORIGINAL_DST hosts made on demand (originaldst.go)
}

func newCluster(spec *state.Cluster, log *slog.Logger) *Cluster {
	c := &Cluster{
		Name:      spec.Name,
		LB:        lb.New(spec),
		log:       log.With("cluster", spec.Name),
		endpoints: map[*lb.Host]*Endpoint{},
	}
	c.spec.Store(spec)
	c.od = newDetector(c.LB.Rebuild)
	c.cb = newBreaker(&c.spec)
	c.hc = newHealthChecker(c)
	if spec.Type == state.ClusterStrictDNS || spec.Type == state.ClusterLogicalDNS {
		ctx, cancel := context.WithCancel(context.Background())
		c.stopDNS = cancel
		go c.resolveLoop(ctx, spec)
	}
	return c
}

// Spec returns the cluster's current configuration.
func (c *Cluster) Spec() *state.Cluster { return c.spec.Load() }

func (c *Cluster) update(spec *state.Cluster, cla *state.ClusterLoadAssignment) {
	c.spec.Store(spec)
	c.mu.Lock()
	closed := c.closed
	c.mu.Unlock()
	if !closed {
		c.hostMu.Lock()
		c.od.configure(spec.OutlierDetection)
		c.hc.configure(spec.HealthChecks)
		c.hostMu.Unlock()
	}
	if spec.TLS != nil || len(spec.TransportSocketMatches) > 0 {
		ts, errs := compileTransports(spec, cla, c.ident)
		for _, err := range errs {
			c.log.Error("upstream TLS config", "err", err)
		}
		c.transport.Store(ts)
	} else {
		c.transport.Store(nil)
	}
	if spec.Type == state.ClusterStrictDNS || spec.Type == state.ClusterLogicalDNS {
		// The hosts come from the resolver: republish its last answer with
		// the new spec (the resolver itself is restarted by reconcile when
		// the names change).
		c.mu.Lock()
		lastCLA := c.resolved
		c.mu.Unlock()
		c.setHosts(spec, lastCLA)
		return
	}
	c.setHosts(spec, cla)
}

func (c *Cluster) setHosts(spec *state.Cluster, cla *state.ClusterLoadAssignment) {
	c.internal.Store(internalEndpoints(spec, cla))
	c.hostMu.Lock()
	removed := c.LB.Update(spec, cla)
	hosts := c.LB.Hosts()
	c.od.setHosts(hosts)
	c.hc.setHosts(hosts)
	c.hostMu.Unlock()
	if len(removed) == 0 {
		return
	}
	c.mu.Lock()
	var eps []*Endpoint
	for _, h := range removed {
		if e := c.endpoints[h]; e != nil {
			eps = append(eps, e)
			delete(c.endpoints, h)
		}
		for _, e := range c.named[h] {
			eps = append(eps, e)
		}
		delete(c.named, h)
	}
	c.mu.Unlock()
	for _, e := range eps {
		e.close()
	}
}

func (c *Cluster) close() {
	c.mu.Lock()
	c.closed = true
	if c.stopDNS != nil {
		c.stopDNS()
	}
	var eps []*Endpoint
	for _, e := range c.endpoints {
		eps = append(eps, e)
	}
	for _, m := range c.named {
		for _, e := range m {
			eps = append(eps, e)
		}
	}
	c.endpoints = map[*lb.Host]*Endpoint{}
	c.named = nil
	c.mu.Unlock()
	c.closeOrigDst()
	c.hostMu.Lock()
	c.hc.stop()
	c.od.configure(nil)
	c.hostMu.Unlock()
	for _, e := range eps {
		e.close()
	}
}

// sawTraffic records that the cluster carries traffic; health checks then
// leave no_traffic_interval. The load keeps the hot path free of writes.
func (c *Cluster) sawTraffic() {
	if !c.traffic.Load() {
		c.traffic.Store(true)
	}
}

// Pick picks a host (lb.ErrNoHealthyUpstream when none).
func (c *Cluster) Pick(info *lb.PickInfo) (*lb.Host, error) { return c.LB.Pick(info) }

// Endpoint returns the per-host state for h, creating it on first use.
func (c *Cluster) Endpoint(h *lb.Host) *Endpoint {
	c.mu.Lock()
	e := c.endpoints[h]
	if e == nil {
		e = &Endpoint{Host: h, Cluster: c}
		if !c.closed {
			c.endpoints[h] = e
		}
	}
	c.mu.Unlock()
	return e
}

// Dial opens a connection to h within the cluster's connect_timeout (and
// ctx), originating TLS when the cluster has a transport socket. alpn, when
// non-empty, overrides the configured ALPN list for this dial.
func (c *Cluster) Dial(ctx context.Context, h *lb.Host, alpn ...string) (net.Conn, error) {
	c.sawTraffic()
	return c.dial(ctx, h, alpn...)
}

// dial is Dial without counting as traffic (health checks use it).
func (c *Cluster) dial(ctx context.Context, h *lb.Host, alpn ...string) (net.Conn, error) {
	return c.dialNamed(ctx, h, "", alpn...)
}

// dialNamed is dial for the auto_sni name (sni.go); "" uses the
// transport socket as configured.
func (c *Cluster) dialNamed(ctx context.Context, h *lb.Host, name string, alpn ...string) (net.Conn, error) {
	spec := c.spec.Load()
	timeout := spec.ConnectTimeout
	if timeout <= 0 {
		timeout = state.DefaultConnectTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := c.dialTransport(ctx, spec, h.Address)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	cfg := c.transport.Load().forHost(h)
	if cfg == nil {
		return conn, nil
	}
	cfg = cfg.Clone()
	if len(alpn) > 0 {
		cfg.NextProtos = alpn
	}
	if name != "" {
		applyAutoSNI(cfg, spec.AutoSNI, name)
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, fmt.Errorf("tls handshake with %s: %w", h.Address, err)
	}
	return tc, nil
}

// TLS reports whether connections to this cluster use TLS (for some
// hosts, with transport_socket_matches; see TLSFor).
func (c *Cluster) TLS() bool { return c.transport.Load().anyTLS() }

// TLSFor reports whether connections to h use TLS.
func (c *Cluster) TLSFor(h *lb.Host) bool { return c.transport.Load().forHost(h) != nil }

// PoolKind indexes the pool slots of an Endpoint.
type PoolKind int

const (
	PoolHTTP1 PoolKind = iota
	PoolHTTP2
	numPoolKinds
)

// Endpoint is the per-host state the HTTP layer keeps pools in.
type Endpoint struct {
	Host    *lb.Host
	Cluster *Cluster
	// Name is the auto_sni name its connections are made for ("" for the
	// host's plain endpoint; see EndpointFor).
	Name string

	mu     sync.Mutex
	slots  [numPoolKinds]atomic.Pointer[poolBox]
	closed bool
}

type poolBox struct{ p io.Closer }

// Pool returns the pool of the given kind, creating it with mk on first use.
// The fast path is one atomic load.
func (e *Endpoint) Pool(kind PoolKind, mk func(*Endpoint) io.Closer) io.Closer {
	if b := e.slots[kind].Load(); b != nil {
		return b.p
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if b := e.slots[kind].Load(); b != nil {
		return b.p
	}
	p := mk(e)
	if e.closed {
		// The endpoint already left the cluster: hand out a pool that is
		// closed once this caller's use ends (Close must tolerate in-flight
		// use by draining, per the io.Closer contract of pools).
		defer p.Close()
		return p
	}
	e.slots[kind].Store(&poolBox{p: p})
	return p
}

func (e *Endpoint) close() {
	e.mu.Lock()
	e.closed = true
	var ps []io.Closer
	for i := range e.slots {
		if b := e.slots[i].Swap(nil); b != nil {
			ps = append(ps, b.p)
		}
	}
	e.mu.Unlock()
	for _, p := range ps {
		_ = p.Close()
	}
}

// ConnectTimeout returns the cluster's connect timeout.
func (c *Cluster) ConnectTimeout() time.Duration {
	if t := c.spec.Load().ConnectTimeout; t > 0 {
		return t
	}
	return state.DefaultConnectTimeout
}
