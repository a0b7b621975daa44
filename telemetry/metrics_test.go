package telemetry

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gather scrapes m and returns its families by name.
func gather(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.Collector())
	fams, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

func labelsOf(mt *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range mt.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// find returns the metrics of family name whose labels include want.
func find(fams map[string]*dto.MetricFamily, name string, want map[string]string) []*dto.Metric {
	var out []*dto.Metric
	f := fams[name]
	if f == nil {
		return nil
	}
next:
	for _, mt := range f.GetMetric() {
		l := labelsOf(mt)
		for k, v := range want {
			if l[k] != v {
				continue next
			}
		}
		out = append(out, mt)
	}
	return out
}

var local = Workload{Name: "productpage-v1", Namespace: "default", App: "productpage", Version: "v1",
	Principal: "spiffe://cluster.local/ns/default/sa/productpage", Service: "productpage.default.svc.cluster.local"}

func httpRec(listener, cluster, principal string, code int, flags string) *HTTPRecord {
	r := &HTTPRecord{}
	r.Reset()
	r.Listener, r.UpstreamCluster, r.PeerPrincipal = listener, cluster, principal
	r.ResponseCode, r.ResponseFlags = code, flags
	r.Attempts = 1
	r.Duration = 3 * time.Millisecond
	r.BytesReceived, r.BytesSent = 10, 2000
	return r
}

func TestRequestLabels(t *testing.T) {
	tests := []struct {
		name string
		rec  *HTTPRecord
		want map[string]string
	}{
		{
			name: "outbound istio cluster",
			rec:  httpRec("virtualOutbound", "outbound|9080|v2|reviews.default.svc.cluster.local", "", 200, ""),
			want: map[string]string{
				"reporter": "source", "source_workload": "productpage-v1", "source_workload_namespace": "default",
				"source_principal": local.Principal, "source_app": "productpage", "source_version": "v1",
				"destination_service": "reviews.default.svc.cluster.local", "destination_service_name": "reviews",
				"destination_service_namespace": "default", "destination_version": "v2", "destination_workload": "unknown",
				"request_protocol": "http", "response_code": "200", "grpc_response_status": "-",
				"response_flags": "-", "connection_security_policy": "unknown",
			},
		},
		{
			name: "outbound plain cluster with flags",
			rec:  httpRec("egress", "backend", "", 503, "UF,URX"),
			want: map[string]string{
				"reporter": "source", "destination_service": "backend", "destination_service_name": "backend",
				"destination_service_namespace": "unknown", "destination_version": "unknown",
				"response_code": "503", "response_flags": "UF,URX",
			},
		},
		{
			name: "inbound mtls",
			rec:  httpRec("virtualInbound", "inbound|9080||", "spiffe://cluster.local/ns/shop/sa/frontend", 404, ""),
			want: map[string]string{
				"reporter": "destination", "source_principal": "spiffe://cluster.local/ns/shop/sa/frontend",
				"source_workload_namespace": "shop", "source_workload": "unknown",
				"destination_workload": "productpage-v1", "destination_app": "productpage", "destination_version": "v1",
				"destination_principal": local.Principal,
				"destination_service":   "productpage.default.svc.cluster.local", "destination_service_name": "productpage",
				"connection_security_policy": "mutual_tls", "response_code": "404",
			},
		},
		{
			name: "inbound plaintext",
			rec:  httpRec("inbound_15006", "local-app", "", 200, ""),
			want: map[string]string{
				"reporter": "destination", "source_principal": "unknown", "connection_security_policy": "none",
				"destination_service": "local-app",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMetrics(MetricsConfig{Workload: local})
			m.HTTPDone(tc.rec)
			m.HTTPDone(tc.rec)
			got := find(gather(t, m), "istio_requests_total", tc.want)
			if len(got) != 1 {
				t.Fatalf("series matching %v: %d; all: %v", tc.want, len(got), gather(t, m)["istio_requests_total"])
			}
			if v := got[0].GetCounter().GetValue(); v != 2 {
				t.Errorf("count = %v, want 2", v)
			}
			if n := len(got[0].GetLabel()); n != len(httpLabels) {
				t.Errorf("%d labels, want %d", n, len(httpLabels))
			}
		})
	}
}

func TestGRPCLabels(t *testing.T) {
	m := NewMetrics(MetricsConfig{})
	r := httpRec("out", "grpc-backend", "", 200, "")
	r.GRPC, r.GRPCStatus = true, 14
	m.HTTPDone(r)
	if got := find(gather(t, m), "istio_requests_total", map[string]string{"request_protocol": "grpc", "grpc_response_status": "14"}); len(got) != 1 {
		t.Fatalf("grpc series: %d", len(got))
	}
}

func TestDurationHistogram(t *testing.T) {
	m := NewMetrics(MetricsConfig{})
	for _, d := range []time.Duration{300 * time.Microsecond, 7 * time.Millisecond, 7 * time.Millisecond, 2 * time.Second, 2 * time.Hour} {
		r := httpRec("out", "c", "", 200, "")
		r.Duration = d
		m.HTTPDone(r)
	}
	fams := gather(t, m)
	h := find(fams, "istio_request_duration_milliseconds", nil)[0].GetHistogram()
	if h.GetSampleCount() != 5 {
		t.Fatalf("count = %d", h.GetSampleCount())
	}
	want := map[float64]uint64{0.5: 1, 5: 1, 10: 3, 2500: 4, 3600000: 4}
	for _, b := range h.GetBucket() {
		if w, ok := want[b.GetUpperBound()]; ok && b.GetCumulativeCount() != w {
			t.Errorf("bucket le=%v: %d, want %d", b.GetUpperBound(), b.GetCumulativeCount(), w)
		}
	}
	if len(h.GetBucket()) != len(istioBuckets) {
		t.Errorf("%d buckets, want Istio's %d", len(h.GetBucket()), len(istioBuckets))
	}
	if s := h.GetSampleSum(); s < 7202014 || s > 7202015 { // 0.3+7+7+2000+7200000 ms
		t.Errorf("sum = %v ms", s)
	}
	rb := find(fams, "istio_response_bytes", nil)[0].GetHistogram()
	if rb.GetSampleSum() != 5*2000 {
		t.Errorf("response bytes sum = %v", rb.GetSampleSum())
	}
}

func TestCardinalityBounded(t *testing.T) {
	m := NewMetrics(MetricsConfig{MaxSeries: 10})
	for i := range 100 {
		m.HTTPDone(httpRec("in-inbound", "c", fmt.Sprintf("spiffe://td/ns/n/sa/%d", i), 200, ""))
	}
	fams := gather(t, m)
	all := find(fams, "istio_requests_total", nil)
	if len(all) != 11 {
		t.Fatalf("%d series, want 10 + overflow", len(all))
	}
	over := find(fams, "istio_requests_total", map[string]string{"reporter": "overflow"})
	if len(over) != 1 || over[0].GetCounter().GetValue() != 90 {
		t.Fatalf("overflow series: %v", over)
	}
}

func TestTCPCounters(t *testing.T) {
	m := NewMetrics(MetricsConfig{})
	ok := &TCPRecord{Conn: Conn{Listener: "out"}, UpstreamCluster: "db"}
	m.TCPOpened(func() *TCPRecord { ok.Connected = true; return ok }())
	open := gather(t, m)
	if v := find(open, "istio_tcp_connections_opened_total", map[string]string{"destination_service": "db"})[0].GetCounter().GetValue(); v != 1 {
		t.Fatalf("opened = %v", v)
	}
	if v := find(open, "envoy_cluster_upstream_cx_active", map[string]string{"cluster_name": "db"})[0].GetGauge().GetValue(); v != 1 {
		t.Fatalf("cx_active while open = %v", v)
	}
	ok.BytesReceived, ok.BytesSent = 100, 5000
	m.TCPDone(ok)
	m.TCPDone(&TCPRecord{Conn: Conn{Listener: "out"}, UpstreamCluster: "db", ResponseFlags: "UF"})

	fams := gather(t, m)
	want := map[string]float64{
		"istio_tcp_connections_opened_total": 1, "istio_tcp_connections_closed_total": 1,
		"istio_tcp_received_bytes_total": 100, "istio_tcp_sent_bytes_total": 5000,
	}
	for name, w := range want {
		got := find(fams, name, map[string]string{"destination_service": "db", "response_flags": "-", "request_protocol": "tcp"})
		if len(got) != 1 || got[0].GetCounter().GetValue() != w {
			t.Errorf("%s = %v, want %v", name, got, w)
		}
	}
	failed := find(fams, "istio_tcp_connections_failed_total", map[string]string{"response_flags": "UF"})
	if len(failed) != 1 || failed[0].GetCounter().GetValue() != 1 {
		t.Errorf("failed = %v", failed)
	}
	if v := find(fams, "envoy_cluster_upstream_cx_active", map[string]string{"cluster_name": "db"})[0].GetGauge().GetValue(); v != 0 {
		t.Errorf("cx_active after close = %v", v)
	}
}

func TestClusterAndXDSStats(t *testing.T) {
	m := NewMetrics(MetricsConfig{Version: "1.2.3"})
	r := httpRec("out", "backend", "", 200, "")
	r.Attempts = 3
	m.HTTPDone(r)
	m.HTTPDone(httpRec("out", "backend", "", 503, "UF"))
	m.SetClusterSource(func() []ClusterStats {
		return []ClusterStats{{Name: "backend", OutlierActive: 1,
			OutlierEnforced: map[string]uint64{"consecutive_5xx": 2},
			BreakerOverflow: map[string]uint64{"requests": 7}}}
	})
	m.SetXDSSource(func() XDSStats {
		return XDSStats{Connected: true, Versions: map[string]string{"type.googleapis.com/envoy.config.cluster.v3.Cluster": "v9"}}
	})
	fams := gather(t, m)
	cluster := map[string]string{"cluster_name": "backend"}
	checks := []struct {
		name string
		want float64
	}{
		{"envoy_cluster_upstream_rq_total", 4},
		{"envoy_cluster_upstream_rq_retry", 2},
		{"envoy_cluster_outlier_detection_ejections_active", 1},
		{"envoy_cluster_outlier_detection_ejections_enforced_consecutive_5xx", 2},
		{"envoy_cluster_outlier_detection_ejections_enforced_total", 2},
		{"envoy_cluster_upstream_rq_overflow", 7},
		{"envoy_cluster_upstream_cx_overflow", 0},
	}
	for _, c := range checks {
		got := find(fams, c.name, cluster)
		if len(got) != 1 {
			t.Errorf("%s: %d series", c.name, len(got))
			continue
		}
		v := got[0].GetCounter().GetValue() + got[0].GetGauge().GetValue()
		if v != c.want {
			t.Errorf("%s = %v, want %v", c.name, v, c.want)
		}
	}
	if got := find(fams, "envoy_control_plane_connected_state", nil); len(got) != 1 || got[0].GetGauge().GetValue() != 1 {
		t.Errorf("connected_state = %v", got)
	}
	if got := find(fams, "meshlet_xds_version_info", map[string]string{"version": "v9"}); len(got) != 1 {
		t.Errorf("version info = %v", got)
	}
	if got := find(fams, "istio_build", map[string]string{"component": "proxy", "tag": "1.2.3"}); len(got) != 1 {
		t.Errorf("istio_build = %v", got)
	}
}

// TestRecordAllocs checks that counting a request or connection whose
// label set was seen before allocates nothing.
func TestRecordAllocs(t *testing.T) {
	m := NewMetrics(MetricsConfig{Workload: local})
	hr := httpRec("virtualOutbound", "outbound|80||a.b.svc.cluster.local", "spiffe://td/ns/x/sa/y", 200, "")
	tr := &TCPRecord{Conn: Conn{Listener: "out"}, UpstreamCluster: "db", Connected: true}
	sink := Multi(m, nil)
	sink.HTTPDone(hr)
	m.TCPOpened(tr)
	sink.TCPDone(tr)
	if n := testing.AllocsPerRun(1000, func() { sink.HTTPDone(hr) }); n != 0 {
		t.Errorf("HTTPDone: %v allocs", n)
	}
	if n := testing.AllocsPerRun(1000, func() { m.TCPOpened(tr); sink.TCPDone(tr) }); n != 0 {
		t.Errorf("TCP: %v allocs", n)
	}
}

func BenchmarkHTTPDone(b *testing.B) {
	m := NewMetrics(MetricsConfig{Workload: local})
	hr := httpRec("virtualOutbound", "outbound|80||a.b.svc.cluster.local", "", 200, "")
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.HTTPDone(hr)
		}
	})
}

func TestMux(t *testing.T) {
	m := NewMetrics(MetricsConfig{})
	m.HTTPDone(httpRec("out", "backend", "", 200, ""))
	srv := httptest.NewServer(m.Mux())
	defer srv.Close()
	for _, p := range []string{"/stats/prometheus", "/metrics"} {
		resp, err := srv.Client().Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(body), `istio_requests_total{`) {
			t.Errorf("%s: %d %.200s", p, resp.StatusCode, body)
		}
	}
}

func TestPeerPrincipal(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://td/ns/a/sa/b")
	web, _ := url.Parse("https://example.com")
	tests := []struct {
		name string
		cs   *tls.ConnectionState
		want string
	}{
		{"nil", nil, ""},
		{"no certs", &tls.ConnectionState{}, ""},
		{"spiffe", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{web, spiffe}}}}, "spiffe://td/ns/a/sa/b"},
		{"no spiffe", &tls.ConnectionState{PeerCertificates: []*x509.Certificate{{URIs: []*url.URL{web}}}}, ""},
	}
	for _, tc := range tests {
		if got := PeerPrincipal(tc.cs); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

type countSink struct{ http, tcp int }

func (c *countSink) HTTPDone(*HTTPRecord) { c.http++ }
func (c *countSink) TCPDone(*TCPRecord)   { c.tcp++ }

func TestMulti(t *testing.T) {
	if Multi() != nil || Multi(nil, nil) != nil {
		t.Fatal("Multi of nothing must be nil (telemetry off)")
	}
	a, b := &countSink{}, &countSink{}
	if Multi(a, nil) != Sink(a) {
		t.Error("Multi of one sink should be that sink")
	}
	s := Multi(a, b)
	s.HTTPDone(&HTTPRecord{})
	s.TCPDone(&TCPRecord{})
	if a.http != 1 || b.http != 1 || a.tcp != 1 || b.tcp != 1 {
		t.Errorf("a=%+v b=%+v", a, b)
	}
	// Opened connections reach the sinks that count them through Multi.
	m := NewMetrics(MetricsConfig{})
	o, ok := Multi(a, m).(TCPOpener)
	if !ok {
		t.Fatal("Multi does not forward TCPOpened")
	}
	o.TCPOpened(&TCPRecord{UpstreamCluster: "db", Connected: true})
	if got := find(gather(t, m), "istio_tcp_connections_opened_total", nil); len(got) != 1 || got[0].GetCounter().GetValue() != 1 {
		t.Errorf("opened through Multi = %v", got)
	}
}

func TestHTTPRecordReset(t *testing.T) {
	r := HTTPRecord{Conn: Conn{Listener: "l"}, ResponseCode: 200, Path: "/x", Attempts: 2}
	r.Reset()
	if r.Listener != "l" || r.ResponseCode != 0 || r.Path != "" || r.Attempts != 0 || r.GRPCStatus != NoGRPCStatus {
		t.Errorf("after Reset: %+v", r)
	}
}
