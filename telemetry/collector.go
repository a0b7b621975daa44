package telemetry

import (
	"net/http"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ClusterStats are one upstream cluster's Envoy-style counters, read on
// scrape from whatever owns the clusters (cmd wires dataplane/upstream's
// Cluster.Stats through SetClusterSource).
type ClusterStats struct {
	Name string
	// OutlierActive is the number of hosts ejected now; OutlierEnforced
	// and OutlierDetected count ejections by reason ("consecutive_5xx");
	// OutlierOverflow counts ejections skipped by max_ejection_percent.
	OutlierActive                    int
	OutlierEnforced, OutlierDetected map[string]uint64
	OutlierOverflow                  uint64
	// BreakerOpen and BreakerOverflow are keyed by resource:
	// "connections", "pending_requests", "requests", "retries",
	// "connection_pools".
	BreakerOpen     map[string]int64
	BreakerOverflow map[string]uint64
}

// XDSStats describe the xDS client, read on scrape.
type XDSStats struct {
	Connected bool
	// Versions is the last accepted version per type URL.
	Versions map[string]string
	// Rejected reports whether the last response of some type was NACKed.
	Rejected bool
}

// SetClusterSource sets the function read on scrape for cluster stats.
func (m *Metrics) SetClusterSource(f func() []ClusterStats) {
	m.mu.Lock()
	m.clusters = f
	m.mu.Unlock()
}

// SetXDSSource sets the function read on scrape for xDS client stats.
func (m *Metrics) SetXDSSource(f func() XDSStats) {
	m.mu.Lock()
	m.xds = f
	m.mu.Unlock()
}

// Envoy's stat names for the circuit-breaker resources: the open gauge
// under circuit_breakers.default and the overflow counter on the cluster.
var breakerNames = map[string][2]string{
	"connections":      {"cx_open", "upstream_cx_overflow"},
	"pending_requests": {"rq_pending_open", "upstream_rq_pending_overflow"},
	"requests":         {"rq_open", "upstream_rq_overflow"},
	"retries":          {"rq_retry_open", "upstream_rq_retry_overflow"},
	"connection_pools": {"cx_pool_open", "upstream_cx_pool_overflow"},
}

// descs are the metric descriptors, built once.
type descs struct {
	requests, duration, reqBytes, respBytes           *prometheus.Desc
	reqMsgs, respMsgs                                 *prometheus.Desc
	tcpOpened, tcpClosed, tcpFailed, tcpRecv, tcpSent *prometheus.Desc
	build                                             *prometheus.Desc
}

func newDescs() *descs {
	d := func(name, help string, labels []string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &descs{
		requests:  d("istio_requests_total", "Requests handled, by Istio's standard labels.", httpLabels),
		duration:  d("istio_request_duration_milliseconds", "Request duration in milliseconds.", httpLabels),
		reqBytes:  d("istio_request_bytes", "Request body sizes in bytes.", httpLabels),
		respBytes: d("istio_response_bytes", "Response body sizes in bytes.", httpLabels),
		reqMsgs:   d("istio_request_messages_total", "gRPC messages sent by clients on gRPC streams.", httpLabels),
		respMsgs:  d("istio_response_messages_total", "gRPC messages sent by servers on gRPC streams.", httpLabels),
		tcpOpened: d("istio_tcp_connections_opened_total", "TCP connections opened.", istioLabels),
		tcpClosed: d("istio_tcp_connections_closed_total", "TCP connections closed.", istioLabels),
		tcpFailed: d("istio_tcp_connections_failed_total", "TCP connections that failed to reach the upstream.", istioLabels),
		tcpRecv:   d("istio_tcp_received_bytes_total", "Bytes received from downstream on TCP connections.", istioLabels),
		tcpSent:   d("istio_tcp_sent_bytes_total", "Bytes sent to downstream on TCP connections.", istioLabels),
		build:     d("istio_build", "Proxy build information.", []string{"component", "tag"}),
	}
}

// collector exports a Metrics sink. It describes nothing up front
// (an unchecked collector): its label sets and cluster names are dynamic.
type collector struct {
	m *Metrics
	d *descs
}

// Collector returns a prometheus.Collector reading m on each scrape.
func (m *Metrics) Collector() prometheus.Collector { return &collector{m: m, d: newDescs()} }

func (c *collector) Describe(chan<- *prometheus.Desc) {}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	d := c.d
	m := c.m
	ch <- prometheus.MustNewConstMetric(d.build, prometheus.GaugeValue, 1, "proxy", orUnknown(m.cfg.Version))

	type clusterAgg = struct{ rq, retry uint64 }
	agg := map[string]*clusterAgg{}
	for k, s := range m.http.snapshot() {
		ch <- prometheus.MustNewConstMetric(d.requests, prometheus.CounterValue, float64(s.requests.Load()), s.labels...)
		n, sum, b := s.duration.snapshot(1000)
		ch <- prometheus.MustNewConstHistogram(d.duration, n, sum, b, s.labels...)
		n, sum, b = s.reqBytes.snapshot(1)
		ch <- prometheus.MustNewConstHistogram(d.reqBytes, n, sum, b, s.labels...)
		n, sum, b = s.respBytes.snapshot(1)
		ch <- prometheus.MustNewConstHistogram(d.respBytes, n, sum, b, s.labels...)
		if k.grpc {
			ch <- prometheus.MustNewConstMetric(d.reqMsgs, prometheus.CounterValue, float64(s.reqMsgs.Load()), s.labels...)
			ch <- prometheus.MustNewConstMetric(d.respMsgs, prometheus.CounterValue, float64(s.respMsgs.Load()), s.labels...)
		}
		if k.cluster != "" && !k.overflow {
			a := agg[k.cluster]
			if a == nil {
				a = &clusterAgg{}
				agg[k.cluster] = a
			}
			a.rq += s.upstreamRq.Load()
			a.retry += s.retries.Load()
		}
	}
	cxActive := map[string]int64{}
	for k, s := range m.tcp.snapshot() {
		opened, closed := s.opened.Load(), s.closed.Load()
		ch <- prometheus.MustNewConstMetric(d.tcpOpened, prometheus.CounterValue, float64(opened), s.labels...)
		ch <- prometheus.MustNewConstMetric(d.tcpClosed, prometheus.CounterValue, float64(closed), s.labels...)
		ch <- prometheus.MustNewConstMetric(d.tcpFailed, prometheus.CounterValue, float64(s.failed.Load()), s.labels...)
		ch <- prometheus.MustNewConstMetric(d.tcpRecv, prometheus.CounterValue, float64(s.received.Load()), s.labels...)
		ch <- prometheus.MustNewConstMetric(d.tcpSent, prometheus.CounterValue, float64(s.sent.Load()), s.labels...)
		if k.cluster != "" && !k.overflow {
			cxActive[k.cluster] += int64(opened) - int64(closed)
		}
	}
	c.collectClusters(ch, agg, cxActive)
	c.collectListeners(ch)
	c.collectXDS(ch)
}

// envoy_cluster_* metrics: request and retry totals summed from the request
// series, tcp_proxy connections active, and the cluster's own outlier and
// circuit-breaker counters.
func (c *collector) collectClusters(ch chan<- prometheus.Metric, agg map[string]*struct{ rq, retry uint64 }, cxActive map[string]int64) {
	cl := []string{"cluster_name"}
	gauge := func(name string, v float64, cluster string) {
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("envoy_cluster_"+name, "Envoy cluster stat "+name+".", cl, nil), prometheus.GaugeValue, v, cluster)
	}
	counter := func(name string, v float64, cluster string) {
		ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("envoy_cluster_"+name, "Envoy cluster stat "+name+".", cl, nil), prometheus.CounterValue, v, cluster)
	}
	for name, a := range agg {
		counter("upstream_rq_total", float64(a.rq), name)
		counter("upstream_rq_retry", float64(a.retry), name)
	}
	for name, n := range cxActive {
		gauge("upstream_cx_active", float64(n), name)
	}
	c.m.mu.Lock()
	src := c.m.clusters
	c.m.mu.Unlock()
	if src == nil {
		return
	}
	stats := src()
	sort.Slice(stats, func(i, j int) bool { return stats[i].Name < stats[j].Name })
	for _, st := range stats {
		gauge("outlier_detection_ejections_active", float64(st.OutlierActive), st.Name)
		var total uint64
		for _, r := range sortedKeys(st.OutlierEnforced) {
			total += st.OutlierEnforced[r]
			counter("outlier_detection_ejections_enforced_"+r, float64(st.OutlierEnforced[r]), st.Name)
		}
		counter("outlier_detection_ejections_enforced_total", float64(total), st.Name)
		for _, r := range sortedKeys(st.OutlierDetected) {
			counter("outlier_detection_ejections_detected_"+r, float64(st.OutlierDetected[r]), st.Name)
		}
		counter("outlier_detection_ejections_overflow", float64(st.OutlierOverflow), st.Name)
		for res, names := range breakerNames {
			gauge("circuit_breakers_default_"+names[0], float64(st.BreakerOpen[res]), st.Name)
			counter(names[1], float64(st.BreakerOverflow[res]), st.Name)
		}
	}
}

func (c *collector) collectXDS(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	src := c.m.xds
	c.m.mu.Unlock()
	if src == nil {
		return
	}
	st := src()
	connected := 0.0
	if st.Connected {
		connected = 1
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("envoy_control_plane_connected_state",
		"1 while the xDS stream is connected.", nil, nil), prometheus.GaugeValue, connected)
	rejected := 0.0
	if st.Rejected {
		rejected = 1
	}
	ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("meshlet_xds_rejected",
		"1 when the last response of some type was rejected (NACK).", nil, nil), prometheus.GaugeValue, rejected)
	vd := prometheus.NewDesc("meshlet_xds_version_info", "Last accepted version per resource type.", []string{"type_url", "version"}, nil)
	for _, t := range sortedKeys(st.Versions) {
		ch <- prometheus.MustNewConstMetric(vd, prometheus.GaugeValue, 1, t, st.Versions[t])
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Handler returns the Prometheus exposition of m plus the Go runtime and
// process collectors, for /stats/prometheus and /metrics.
func (m *Metrics) Handler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector(), extraCollectors{m}, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// Mux serves m's exposition on Istio's merged-metrics paths.
func (m *Metrics) Mux() *http.ServeMux {
	h := m.Handler()
	mux := http.NewServeMux()
	mux.Handle("GET /stats/prometheus", h)
	mux.Handle("GET /metrics", h)
	return mux
}
