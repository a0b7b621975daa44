package dns

import (
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/dns/dnsmessage"
)

// Metrics counts requests under ztunnel's DNS metric names (the Istio
// agent exports the same names with an istio_agent_ prefix), labelled by
// request_query_type and request_protocol. Counting is a few atomic adds
// on fixed arrays: no map, no allocation per query.
type Metrics struct {
	requests, upstream, failures, cacheHits [numQTypes][2]atomic.Uint64
	duration                                [numQTypes][2]histogram
}

// qtypes are the query types with a label of their own; the rest count
// as "other".
var qtypes = []dnsmessage.Type{
	dnsmessage.TypeA, dnsmessage.TypeAAAA, dnsmessage.TypeCNAME, dnsmessage.TypePTR,
	dnsmessage.TypeSRV, dnsmessage.TypeTXT, dnsmessage.TypeMX, dnsmessage.TypeNS,
	dnsmessage.TypeSOA, dnsmessage.TypeALL, dnsmessage.Type(64) /* SVCB */, dnsmessage.Type(65), /* HTTPS */
}

const numQTypes = 13 // len(qtypes) + other

var qtypeLabels = [numQTypes]string{"a", "aaaa", "cname", "ptr", "srv", "txt", "mx", "ns", "soa", "any", "svcb", "https", "other"}

func qtypeIndex(t dnsmessage.Type) int {
	for i, q := range qtypes {
		if q == t {
			return i
		}
	}
	return numQTypes - 1
}

func protoIndex(tcp bool) int {
	if tcp {
		return 1
	}
	return 0
}

var protoLabels = [2]string{"udp", "tcp"}

// histogram is a fixed-bucket histogram of seconds, Istio's buckets.
type histogram struct {
	counts [len(durationBuckets) + 1]atomic.Uint64
	sumNs  atomic.Uint64
}

var durationBuckets = [...]float64{0.001, 0.005, 0.01, 0.1, 1, 5}

func (h *histogram) observe(seconds float64) {
	i := 0
	for i < len(durationBuckets) && seconds > durationBuckets[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNs.Add(uint64(seconds * 1e9))
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descs.requests, descs.upstream, descs.failures, descs.cacheHits, descs.duration} {
		ch <- d
	}
}

var labelNames = []string{"request_query_type", "request_protocol"}

var descs = struct{ requests, upstream, failures, cacheHits, duration *prometheus.Desc }{
	requests:  prometheus.NewDesc("istio_dns_requests_total", "Total number of DNS requests.", labelNames, nil),
	upstream:  prometheus.NewDesc("istio_dns_upstream_requests_total", "Total number of DNS requests forwarded to upstream.", labelNames, nil),
	failures:  prometheus.NewDesc("istio_dns_upstream_failures_total", "Total number of DNS requests that failed to forward upstream.", labelNames, nil),
	cacheHits: prometheus.NewDesc("meshlet_dns_cache_hits_total", "DNS requests answered from the cache of forwarded answers.", labelNames, nil),
	duration: prometheus.NewDesc("istio_dns_upstream_request_duration_seconds",
		"Time in seconds to get a DNS response from upstream.", labelNames, nil),
}

// Collect implements prometheus.Collector. Series that never counted are
// left out.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for t := range numQTypes {
		for p := range 2 {
			lv := []string{qtypeLabels[t], protoLabels[p]}
			for _, c := range []struct {
				d *prometheus.Desc
				v *atomic.Uint64
			}{{descs.requests, &m.requests[t][p]}, {descs.upstream, &m.upstream[t][p]}, {descs.failures, &m.failures[t][p]}, {descs.cacheHits, &m.cacheHits[t][p]}} {
				if v := c.v.Load(); v > 0 {
					ch <- prometheus.MustNewConstMetric(c.d, prometheus.CounterValue, float64(v), lv...)
				}
			}
			h := &m.duration[t][p]
			var total uint64
			buckets := make(map[float64]uint64, len(durationBuckets))
			for i, ub := range durationBuckets {
				total += h.counts[i].Load()
				buckets[ub] = total
			}
			total += h.counts[len(durationBuckets)].Load()
			if total > 0 {
				ch <- prometheus.MustNewConstHistogram(descs.duration, total, float64(h.sumNs.Load())/1e9, buckets, lv...)
			}
		}
	}
}

// Requests returns the request count for a query type name ("a", "aaaa",
// ...) and protocol ("udp", "tcp"); for tests and the admin page.
func (m *Metrics) Requests(qtype, proto string) uint64 {
	return m.read(&m.requests, qtype, proto)
}

// Upstream returns the forwarded request count, as Requests.
func (m *Metrics) Upstream(qtype, proto string) uint64 {
	return m.read(&m.upstream, qtype, proto)
}

func (m *Metrics) read(a *[numQTypes][2]atomic.Uint64, qtype, proto string) uint64 {
	for t, l := range qtypeLabels {
		if l != strings.ToLower(qtype) {
			continue
		}
		for p, pl := range protoLabels {
			if pl == proto {
				return a[t][p].Load()
			}
		}
	}
	return 0
}
