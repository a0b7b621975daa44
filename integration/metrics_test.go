package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// startProxyWithMetrics runs the real binary against cp like startProxy,
// with --metrics on a free loopback port, and returns the metrics address.
func startProxyWithMetrics(t *testing.T, cp *controlPlane) string {
	t.Helper()
	adminPort, metricsPort := freePort(t), freePort(t)
	boot := fmt.Sprintf(`node:
  id: sidecar~127.0.0.1~productpage-v1.default~default.svc.cluster.local
  cluster: test
  metadata: {WORKLOAD_NAME: productpage-v1, NAMESPACE: default, APP: productpage, VERSION: v1}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %d}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services:
    - google_grpc: {target_uri: "%s", stat_prefix: ads}
  lds_config: {ads: {}, resource_api_version: V3}
  cds_config: {ads: {}, resource_api_version: V3}
`, adminPort, cp.addr)
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(boot), 0o600); err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", metricsPort)
	p := &proxy{t: t, admin: fmt.Sprintf("127.0.0.1:%d", adminPort), out: &lockedBuf{}, done: make(chan struct{})}
	p.cmd = exec.Command(binPath, "run", "--bootstrap", path, "--drain-time", "1s", "--metrics", metrics)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("ztunnel output:\n%s", p.out.String())
		}
	})
	p.waitReady()
	return metrics
}

// scrape fetches and parses the exposition at url.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}

// sumWhere sums the counter (or histogram count) of family name over the
// series whose labels include want.
func sumWhere(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	var sum float64
next:
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok && v != l.GetValue() {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			sum += m.GetCounter().GetValue()
		case m.GetHistogram() != nil:
			sum += float64(m.GetHistogram().GetSampleCount())
		case m.GetGauge() != nil:
			sum += m.GetGauge().GetValue()
		}
	}
	return sum
}

// TestMetricsHTTPAndTCP sends known traffic through the real binary and
// checks the scraped Istio metrics: counts per response code and
// destination, histogram counts, TCP counters and cluster stats.
func TestMetricsHTTPAndTCP(t *testing.T) {
	cp := startControlPlane(t)
	v1, v2 := startBackend(t, "v1"), startBackend(t, "v2")
	echo := startTCPEcho(t)
	httpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	missing := &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/missing"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "nowhere"}}},
	}
	toV2 := &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/v2"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "outbound|80|v2|reviews.default.svc.cluster.local"}}},
	}
	cp.set(
		httpListener(t, "http", httpAddr, "local"),
		routeConfig("local", missing, toV2, routeTo("outbound|80|v1|reviews.default.svc.cluster.local")),
		edsCluster("outbound|80|v1|reviews.default.svc.cluster.local", clusterv3.Cluster_ROUND_ROBIN, false),
		edsCluster("outbound|80|v2|reviews.default.svc.cluster.local", clusterv3.Cluster_ROUND_ROBIN, false),
		endpoints(t, "outbound|80|v1|reviews.default.svc.cluster.local", v1.addr),
		endpoints(t, "outbound|80|v2|reviews.default.svc.cluster.local", v2.addr),
		tcpListener(t, "tcp", tcpAddr, "echo"),
		edsCluster("echo", clusterv3.Cluster_ROUND_ROBIN, false),
		endpoints(t, "echo", echo),
	)
	metrics := startProxyWithMetrics(t, cp)
	c := h1Client()
	eventually(t, 10*time.Second, func() error {
		_, be, _, err := get(c, "http://"+httpAddr+"/", nil)
		if err == nil && be != "v1" {
			err = fmt.Errorf("backend %q", be)
		}
		return err
	})
	// Baseline after the readiness probe above; then known traffic. A
	// request is counted after its response is written, so the probe's
	// record may land just after the client saw the answer: wait until the
	// count is non-zero and steady.
	v1Sel := map[string]string{"destination_version": "v1", "response_code": "200", "reporter": "source"}
	var before float64
	eventually(t, 5*time.Second, func() error {
		a := sumWhere(scrape(t, "http://"+metrics+"/stats/prometheus"), "istio_requests_total", v1Sel)
		time.Sleep(100 * time.Millisecond)
		b := sumWhere(scrape(t, "http://"+metrics+"/stats/prometheus"), "istio_requests_total", v1Sel)
		if a < 1 || a != b {
			return fmt.Errorf("baseline not steady: %v then %v", a, b)
		}
		before = b
		return nil
	})
	const n1, n2, nMissing = 7, 3, 2
	for range n1 {
		if code, _, _, err := get(c, "http://"+httpAddr+"/", nil); err != nil || code != 200 {
			t.Fatalf("v1 request: %d %v", code, err)
		}
	}
	for range n2 {
		if code, _, _, err := get(c, "http://"+httpAddr+"/v2", nil); err != nil || code != 200 {
			t.Fatalf("v2 request: %d %v", code, err)
		}
	}
	for range nMissing {
		if code, _, _, err := get(c, "http://"+httpAddr+"/missing", nil); err != nil || code != 503 {
			t.Fatalf("missing-cluster request: %d %v", code, err)
		}
	}
	// TCP: one echoed connection.
	conn, err := net.Dial("tcp", tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.TCPConn).CloseWrite()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if got, err := io.ReadAll(conn); err != nil || string(got) != "hello" {
		t.Fatalf("echo %q %v", got, err)
	}
	conn.Close()

	var fams map[string]*dto.MetricFamily
	checks := []struct {
		what   string
		family string
		labels map[string]string
		want   float64
	}{
		{"v1 requests", "istio_requests_total", v1Sel, before + n1},
		{"v2 requests", "istio_requests_total", map[string]string{"destination_version": "v2", "response_code": "200",
			"destination_service": "reviews.default.svc.cluster.local", "destination_service_name": "reviews",
			"destination_service_namespace": "default", "source_workload": "productpage-v1", "source_app": "productpage"}, n2},
		{"v2 duration histogram", "istio_request_duration_milliseconds", map[string]string{"destination_version": "v2"}, n2},
		{"v2 response size histogram", "istio_response_bytes", map[string]string{"destination_version": "v2"}, n2},
		{"no cluster 503", "istio_requests_total", map[string]string{"response_code": "503", "response_flags": "NC", "destination_service": "nowhere"}, nMissing},
		{"tcp opened", "istio_tcp_connections_opened_total", map[string]string{"destination_service": "echo", "request_protocol": "tcp"}, 1},
		{"tcp closed", "istio_tcp_connections_closed_total", map[string]string{"destination_service": "echo"}, 1},
		{"tcp received", "istio_tcp_received_bytes_total", map[string]string{"destination_service": "echo"}, 5},
		{"tcp sent", "istio_tcp_sent_bytes_total", map[string]string{"destination_service": "echo"}, 5},
		{"cluster rq total", "envoy_cluster_upstream_rq_total", map[string]string{"cluster_name": "outbound|80|v2|reviews.default.svc.cluster.local"}, n2},
		{"xds connected", "envoy_control_plane_connected_state", nil, 1},
		{"build", "istio_build", map[string]string{"component": "proxy"}, 1},
	}
	// The connection's record lands when the proxy sees both sides close.
	eventually(t, 5*time.Second, func() error {
		fams = scrape(t, "http://"+metrics+"/metrics")
		for _, c := range checks {
			if got := sumWhere(fams, c.family, c.labels); got != c.want {
				return fmt.Errorf("%s: %s%v = %v, want %v", c.what, c.family, c.labels, got, c.want)
			}
		}
		return nil
	})
	// The outlier/breaker families exist for each cluster.
	if sumWhere(fams, "envoy_cluster_upstream_rq_overflow", map[string]string{"cluster_name": "echo"}) != 0 ||
		fams["envoy_cluster_upstream_rq_overflow"] == nil {
		t.Errorf("envoy_cluster_upstream_rq_overflow missing or nonzero")
	}
}
