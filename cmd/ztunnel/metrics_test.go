package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/xds"
)

// TestProxyMetricsServer starts the proxy with metrics on a free port and
// scrapes both paths; a busy metrics port leaves the proxy running
// without metrics.
func TestProxyMetricsServer(t *testing.T) {
	node := xds.Node{ID: "sidecar~127.0.0.1~a.ns~ns.svc.cluster.local", Metadata: map[string]string{"WORKLOAD_NAME": "a", "NAMESPACE": "ns"}}
	p, err := startProxy(proxyConfig{Node: node, MetricsAddress: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = p.shutdown(ctx)
	}()
	if p.metrics == nil {
		t.Fatal("metrics server not started")
	}
	addr := p.metrics.Addr().String()
	for _, path := range []string{"/stats/prometheus", "/metrics"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `istio_build{component="proxy"`) {
			t.Errorf("%s: %d %.300s", path, resp.StatusCode, body)
		}
	}

	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	p2, err := startProxy(proxyConfig{Node: node, MetricsAddress: busy.Addr().String()})
	if err != nil {
		t.Fatalf("busy metrics port must not be fatal: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if p2.metrics != nil {
		t.Error("metrics server started on a busy port")
	}
	if err := p2.shutdown(ctx); err != nil {
		t.Error(err)
	}
}
