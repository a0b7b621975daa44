package telemetry

import (
	"sort"

	"github.com/prometheus/client_golang/prometheus"
)

// ListenerStats are one listener's Envoy-style counters, read on scrape
// from whatever owns the listeners (cmd wires dataplane.Server.Stats).
// Counters are keyed by Envoy's stat name under listener.<name>.
// ("downstream_cx_total", "downstream_cx_overflow", ...); Active is
// downstream_cx_active.
type ListenerStats struct {
	Name     string
	Active   int64
	Counters map[string]uint64
}

// ServerStats are process-wide counters keyed by Envoy-style stat names
// ("overload.shed_requests", ...), read on scrape.
type ServerStats map[string]uint64

// SetListenerSource sets the function read on scrape for listener stats.
func (m *Metrics) SetListenerSource(f func() []ListenerStats) {
	m.mu.Lock()
	m.listeners = f
	m.mu.Unlock()
}

// SetServerSource sets the function read on scrape for process-wide
// counters.
func (m *Metrics) SetServerSource(f func() ServerStats) {
	m.mu.Lock()
	m.server = f
	m.mu.Unlock()
}

// collectListeners emits envoy_listener_<stat>{envoy_listener_address=NAME}
// as Istio's merged endpoint shows Envoy's listener stats, and
// envoy_server_<stat> for process-wide counters.
func (c *collector) collectListeners(ch chan<- prometheus.Metric) {
	c.m.mu.Lock()
	src, server := c.m.listeners, c.m.server
	c.m.mu.Unlock()
	if src != nil {
		labels := []string{"envoy_listener_address"}
		stats := src()
		sort.Slice(stats, func(i, j int) bool { return stats[i].Name < stats[j].Name })
		for _, st := range stats {
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("envoy_listener_downstream_cx_active",
				"Envoy listener stat downstream_cx_active.", labels, nil), prometheus.GaugeValue, float64(st.Active), st.Name)
			for _, name := range sortedKeys(st.Counters) {
				ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("envoy_listener_"+promName(name),
					"Envoy listener stat "+name+".", labels, nil), prometheus.CounterValue, float64(st.Counters[name]), st.Name)
			}
		}
	}
	if server != nil {
		stats := server()
		for _, name := range sortedKeys(stats) {
			ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("envoy_server_"+promName(name),
				"Envoy server stat "+name+".", nil, nil), prometheus.CounterValue, float64(stats[name]))
		}
	}
}

// promName turns an Envoy stat name into a Prometheus one, as Envoy's
// /stats/prometheus does: every character outside [a-zA-Z0-9_] becomes _.
func promName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}
