package telemetry

import "github.com/prometheus/client_golang/prometheus"

// AddCollector adds c to what Handler exposes, e.g. the DNS proxy's
// counters. It may be called after Handler: collectors are read on scrape.
func (m *Metrics) AddCollector(c prometheus.Collector) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.extra = append(m.extra, c)
}

// extraCollectors is registered unchecked (its Describe sends nothing) so
// collectors added after the registry was built are still gathered.
type extraCollectors struct{ m *Metrics }

func (extraCollectors) Describe(chan<- *prometheus.Desc) {}

func (e extraCollectors) Collect(ch chan<- prometheus.Metric) {
	e.m.mu.Lock()
	extra := append([]prometheus.Collector(nil), e.m.extra...)
	e.m.mu.Unlock()
	for _, c := range extra {
		c.Collect(ch)
	}
}

// collectorList is the type of Metrics.extra.
type collectorList = []prometheus.Collector
