package main

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"time"

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
