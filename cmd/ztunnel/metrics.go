package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshlet/meshlet/capture"
	"github.com/meshlet/meshlet/telemetry"
	"github.com/meshlet/meshlet/xds"
)

// defaultMetricsAddress is Istio's merged Prometheus port. Like Istio it
// binds all addresses: scrapers run elsewhere.
const defaultMetricsAddress = ":15020"

// newMetrics builds the metrics sink, labelled with the local workload
// from the node metadata Istio's injector sets (ISTIO_META_WORKLOAD_NAME,
// ISTIO_META_NAMESPACE, ISTIO_META_CLUSTER_ID, ...) and wired to the
// cluster and xDS stats of p, read on scrape.
func (p *proxy) newMetrics(node xds.Node, principal string) *telemetry.Metrics {
	md := node.Metadata
	first := func(keys ...string) string {
		for _, k := range keys {
			if v := md[k]; v != "" {
				return v
			}
		}
		return ""
	}
	m := telemetry.NewMetrics(telemetry.MetricsConfig{
		Workload: telemetry.Workload{
			Name:              first("WORKLOAD_NAME", "NAME"),
			Namespace:         first("NAMESPACE"),
			App:               first("APP", "app"),
			Version:           first("VERSION", "version"),
			CanonicalService:  first("CANONICAL_SERVICE"),
			CanonicalRevision: first("CANONICAL_REVISION"),
			Cluster:           first("CLUSTER_ID"),
			Principal:         principal,
			Service:           first("SERVICE"),
		},
		Version: readBuildInfo().Version,
	})
	m.SetClusterSource(p.clusterStats)
	m.SetXDSSource(p.xdsStats)
	m.SetListenerSource(p.listenerStats)
	m.SetServerSource(p.serverStats)
	return m
}

// clusterStats reads every current cluster's outlier and circuit-breaker
// counters (scrape time only).
func (p *proxy) clusterStats() []telemetry.ClusterStats {
	snap := p.store.Load()
	out := make([]telemetry.ClusterStats, 0, len(snap.Clusters))
	for name := range snap.Clusters {
		c := p.clusters.Cluster(name)
		if c == nil {
			continue
		}
		st := c.Stats()
		out = append(out, telemetry.ClusterStats{
			Name:            name,
			OutlierActive:   st.Outlier.Active,
			OutlierEnforced: st.Outlier.Enforced,
			OutlierDetected: st.Outlier.Detected,
			OutlierOverflow: st.Outlier.Overflow,
			BreakerOpen:     st.Breaker.Open,
			BreakerOverflow: st.Breaker.Overflow,
		})
	}
	return out
}

func (p *proxy) xdsStats() telemetry.XDSStats {
	if p.xds == nil {
		return telemetry.XDSStats{}
	}
	st := p.xds.Status()
	return telemetry.XDSStats{Connected: st.Connected, Versions: st.Versions, Rejected: st.LastNACK != ""}
}

// metricsServer serves /stats/prometheus and /metrics.
type metricsServer struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// startMetricsServer listens on addr. A failure to listen is returned; the
// caller decides whether it is fatal.
// A non-nil inherited socket (from the process this one upgrades) is
// served instead.
func startMetricsServer(addr string, inherited net.Listener, m *telemetry.Metrics, log *slog.Logger) (*metricsServer, error) {
	ln := inherited
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return nil, err
		}
	}
	s := &metricsServer{
		srv:  &http.Server{Handler: m.Mux(), ReadHeaderTimeout: 10 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server stopped", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return s, nil
}

// Addr is the bound address.
func (s *metricsServer) Addr() net.Addr { return s.ln.Addr() }

// shutdown stops the server; nil-safe.
func (s *metricsServer) shutdown(ctx context.Context) error {
	if s == nil {
		return nil
	}
	err := s.srv.Shutdown(ctx)
	<-s.done
	return err
}

// metricsSink is m as a Sink, nil (not a typed nil) when m is nil.
func metricsSink(m *telemetry.Metrics) telemetry.Sink {
	if m == nil {
		return nil
	}
	return m
}

// captureCollector exposes which capture backend redirects traffic (after
// a kernel-probe fallback it is not the one asked for) and, for the eBPF
// backend, its programs' counters, read from the maps on scrape.
type captureCollector struct {
	backend  string // ebpf, iptables, nftables or none
	inbound  string // redirect, tproxy, ebpf or none: what is in place
	fallback bool   // ebpf was asked for, the kernel lacks it
	stats    capture.StatsReporter
	log      *slog.Logger
}

var captureDescs = struct{ info, captured, fastPath, steered, refused *prometheus.Desc }{
	info: prometheus.NewDesc("meshlet_capture_info",
		"Traffic capture in place: backend, inbound mode, and whether eBPF fell back to iptables for want of kernel support. Always 1.",
		[]string{"backend", "inbound", "fallback"}, nil),
	captured: prometheus.NewDesc("meshlet_capture_ebpf_outbound_captured_total",
		"Outbound TCP connects the eBPF programs sent to the proxy's outbound port.", nil, nil),
	fastPath: prometheus.NewDesc("meshlet_capture_ebpf_fastpath_messages_total",
		"Messages the eBPF sockhash fast path handed between same-node sockets (0 without --capture-ebpf-fastpath).", nil, nil),
	steered: prometheus.NewDesc("meshlet_capture_ebpf_inbound_steered_total",
		"Inbound TCP connections the eBPF sk_lookup program handed to the proxy's inbound listener.", nil, nil),
	refused: prometheus.NewDesc("meshlet_capture_ebpf_inbound_refused_total",
		"Inbound TCP connections the eBPF sk_lookup program refused because no inbound listener was set.", nil, nil),
}

// newCaptureCollector describes r as started from o (r nil: no capture).
func newCaptureCollector(o *captureOptions, r capture.Redirector, log *slog.Logger) *captureCollector {
	c := &captureCollector{backend: capture.BackendNone, inbound: "none", log: log}
	if r == nil {
		return c
	}
	c.backend = r.Name()
	if strings.HasPrefix(c.backend, capture.BackendIPTables) {
		c.backend = capture.BackendIPTables // iptables-legacy, iptables-nft
	}
	c.inbound = o.inboundMode()
	if o.backend == capture.BackendEBPF && c.backend != capture.BackendEBPF {
		c.fallback = true
		if c.inbound == "ebpf" {
			c.inbound = "redirect" // the netfilter backend NATs it instead
		}
	}
	c.stats, _ = r.(capture.StatsReporter)
	return c
}

// Describe implements prometheus.Collector.
func (c *captureCollector) Describe(ch chan<- *prometheus.Desc) {
	d := captureDescs
	for _, x := range []*prometheus.Desc{d.info, d.captured, d.fastPath, d.steered, d.refused} {
		ch <- x
	}
}

// Collect implements prometheus.Collector. The counters of a direction
// whose programs are not loaded, or whose map could not be read, are left
// out of this scrape rather than failing the whole exposition.
func (c *captureCollector) Collect(ch chan<- prometheus.Metric) {
	d := captureDescs
	ch <- prometheus.MustNewConstMetric(d.info, prometheus.GaugeValue, 1, c.backend, c.inbound, strconv.FormatBool(c.fallback))
	if c.stats == nil {
		return
	}
	st, err := c.stats.Stats() // a partial result on error
	if err != nil {
		c.log.Debug("capture stats", "err", err)
	}
	if st.Outbound {
		ch <- prometheus.MustNewConstMetric(d.captured, prometheus.CounterValue, float64(st.Captured))
		ch <- prometheus.MustNewConstMetric(d.fastPath, prometheus.CounterValue, float64(st.FastPath))
	}
	if st.Inbound {
		ch <- prometheus.MustNewConstMetric(d.steered, prometheus.CounterValue, float64(st.InboundSteered))
		ch <- prometheus.MustNewConstMetric(d.refused, prometheus.CounterValue, float64(st.InboundRefused))
	}
}
