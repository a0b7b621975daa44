package httpproxy

import (
	"bytes"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/telemetry"
)

// recSink copies each record (records and their strings are only valid
// during the call) and hands it to the test.
type recSink struct {
	http chan telemetry.HTTPRecord
	// respHeader is looked up through HTTPRecord.Headers during the call.
	respHeader string
	seenHeader chan string
}

func newRecSink(respHeader string) *recSink {
	return &recSink{http: make(chan telemetry.HTTPRecord, 16), respHeader: respHeader, seenHeader: make(chan string, 16)}
}

func (s *recSink) HTTPDone(r *telemetry.HTTPRecord) {
	c := *r
	c.Method, c.Path, c.Authority = strings.Clone(r.Method), strings.Clone(r.Path), strings.Clone(r.Authority)
	c.RequestID, c.UserAgent = strings.Clone(r.RequestID), strings.Clone(r.UserAgent)
	c.Headers = nil
	h := ""
	if r.Headers != nil {
		h = strings.Clone(r.Headers.ResponseHeader(s.respHeader))
	}
	s.seenHeader <- h
	s.http <- c
}

func (s *recSink) TCPDone(*telemetry.TCPRecord) {}

func (s *recSink) next(t *testing.T) (telemetry.HTTPRecord, string) {
	t.Helper()
	select {
	case r := <-s.http:
		return r, <-s.seenHeader
	case <-time.After(5 * time.Second):
		t.Fatal("no record")
	}
	return telemetry.HTTPRecord{}, ""
}

func TestH1RecordFields(t *testing.T) {
	be := newBackend(t, h1EchoHandler())
	sink := newRecSink("x-rc")
	e := newProxyEnvOpts(t, featureHCM(), Options{Sink: sink},
		h1Cluster("be", be.hostport()), h1Cluster("dead", deadAddr(t)))
	tests := []struct {
		name, req      string
		status         int
		method, path   string
		route, cluster string
		flags          string
		recv, sent     int64
		upstream       bool
	}{
		{name: "proxied POST", req: "POST /echo?q=1 HTTP/1.1\r\nHost: a.example\r\nX-Request-Id: rid-1\r\nUser-Agent: ua\r\nContent-Length: 5\r\n\r\nhello",
			status: 200, method: "POST", path: "/echo?q=1", route: "/", cluster: "be", recv: 5, sent: 5, upstream: true},
		{name: "chunked request body", req: "POST /echo HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n",
			status: 200, method: "POST", path: "/echo", route: "/", cluster: "be", recv: 7, sent: 7, upstream: true},
		{name: "direct response", req: "GET /direct HTTP/1.1\r\nHost: a.example\r\n\r\n",
			status: 418, method: "GET", path: "/direct", route: "direct", sent: int64(len("short and stout"))},
		{name: "no cluster", req: "GET /nocluster HTTP/1.1\r\nHost: a.example\r\n\r\n",
			status: 503, method: "GET", path: "/nocluster", route: "/nocluster", cluster: "missing", flags: "NC"},
		{name: "connect failure", req: "GET /connfail HTTP/1.1\r\nHost: a.example\r\n\r\n",
			status: 503, method: "GET", path: "/connfail", route: "/connfail", cluster: "dead", flags: "UF", sent: int64(len(BodyConnFailure)), upstream: true},
	}
	c := e.dial()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, _ := c.roundTrip(t, tc.req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			r, rc := sink.next(t)
			if r.ResponseCode != tc.status || r.Method != tc.method || r.Path != tc.path || r.Authority != "a.example" ||
				r.RouteName != tc.route || r.UpstreamCluster != tc.cluster || r.ResponseFlags != tc.flags ||
				r.Protocol != "HTTP/1.1" || r.GRPCStatus != telemetry.NoGRPCStatus {
				t.Errorf("record = code %d %s %s %s route %q cluster %q flags %q proto %s grpc %d",
					r.ResponseCode, r.Method, r.Authority, r.Path, r.RouteName, r.UpstreamCluster, r.ResponseFlags, r.Protocol, r.GRPCStatus)
			}
			if r.BytesReceived != tc.recv || r.BytesSent != tc.sent {
				t.Errorf("bytes received %d sent %d, want %d %d", r.BytesReceived, r.BytesSent, tc.recv, tc.sent)
			}
			if (r.UpstreamHost != "") != tc.upstream {
				t.Errorf("upstream host %q", r.UpstreamHost)
			}
			if r.Duration <= 0 || r.Start.IsZero() || time.Since(r.Start) > 5*time.Second {
				t.Errorf("start %v duration %v", r.Start, r.Duration)
			}
			if !r.Remote.IsValid() || r.Local.Port() == 0 {
				t.Errorf("addresses %v %v", r.Remote, r.Local)
			}
			if rc != "rc" {
				t.Errorf("Headers.ResponseHeader(x-rc) = %q", rc)
			}
		})
	}
	// The request id and user agent come from the first request.
	_ = c
}

func TestH1RecordRequestIDAndBadRequest(t *testing.T) {
	be := newBackend(t, h1EchoHandler())
	sink := newRecSink("content-type")
	e := newProxyEnvOpts(t, featureHCM(), Options{Sink: sink}, h1Cluster("be", be.hostport()))
	c := e.dial()
	c.roundTrip(t, "GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: rid-7\r\nUser-Agent: curl/8\r\n\r\n")
	r, _ := sink.next(t)
	if r.RequestID != "rid-7" || r.UserAgent != "curl/8" || r.Attempts != 1 {
		t.Errorf("request id %q user agent %q attempts %d", r.RequestID, r.UserAgent, r.Attempts)
	}
	resp, _ := c.roundTrip(t, "GET / HTTP/1.1\r\nHost: a\r\nX : y\r\n\r\n")
	if resp.StatusCode != 400 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	r, _ = sink.next(t)
	if r.ResponseCode != 400 || r.ResponseFlags != FlagDownstreamProtocolErr || r.UpstreamCluster != "" {
		t.Errorf("bad request record: code %d flags %q cluster %q", r.ResponseCode, r.ResponseFlags, r.UpstreamCluster)
	}
	// A connection closed without a request records nothing.
	c2 := e.dial()
	c2.Close()
	select {
	case r := <-sink.http:
		t.Errorf("unexpected record %+v", r)
	case <-time.After(100 * time.Millisecond):
	}
}

// TestH1MetricsSink runs requests through the proxy into the metrics sink
// and checks the per-code counts it keeps.
func TestH1MetricsSink(t *testing.T) {
	be := newBackend(t, h1EchoHandler())
	m := telemetry.NewMetrics(telemetry.MetricsConfig{})
	hcm := featureHCM()
	hcm.RouteConfig.VirtualHosts[0].Routes = []*state.Route{routeTo("/nocluster", "missing"), routeTo("/", "be")}
	e := newProxyEnvOpts(t, hcm, Options{Sink: m}, h1Cluster("be", be.hostport()))
	c := e.dial()
	for range 3 {
		c.roundTrip(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	}
	c.roundTrip(t, "GET /nocluster HTTP/1.1\r\nHost: a\r\n\r\n")
	want := []string{
		`response_code="200"`, `response_flags="-"`, `destination_service="be"`,
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out := scrape(t, m)
		if strings.Contains(out, "} 3\n") && strings.Contains(out, `response_code="503"`) {
			for _, w := range want {
				if !strings.Contains(out, w) {
					t.Errorf("missing %s in\n%s", w, out)
				}
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("counts never reached 3x200 + 1x503:\n%s", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func scrape(t *testing.T, m *telemetry.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Mux().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	var b bytes.Buffer
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "istio_requests_total{") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// BenchmarkProxyH1Sink is BenchmarkProxyH1 with the metrics sink on: it
// must stay at the same allocs/op.
func BenchmarkProxyH1Sink(b *testing.B) {
	be := newRawBackend(b)
	m := telemetry.NewMetrics(telemetry.MetricsConfig{})
	e := newProxyEnvOpts(b, simpleHCM("c"), Options{Sink: m}, h1Cluster("c", be))
	c := e.dial()
	req := []byte("GET /bench HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\n\r\n")
	buf := make([]byte, 4096)
	tail := []byte("hello from backend\n")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for {
			k, err := c.Read(buf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += k
			if bytes.HasSuffix(buf[:n], tail) {
				break
			}
		}
	}
}
