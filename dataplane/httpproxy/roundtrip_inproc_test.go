package httpproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

// inprocGet sends a request through Proxy.RoundTrip and reads the whole
// body.
func inprocGet(t *testing.T, e *proxyEnv, hcm *state.HTTPConnectionManager, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := e.proxy.RoundTrip(req, hcm, nil)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("body: %v", err)
	}
	return resp, string(b)
}

// closeCounter is a request body that counts its Close calls.
type closeCounter struct {
	io.Reader
	closed atomic.Int32
}

func (c *closeCounter) Close() error { c.closed.Add(1); return nil }

// The in-process path returns the upstream's answer with the proxy's
// response headers, reuses the pooled upstream connection once the body
// was read, forwards the request body, and answers locally (404 NR) where
// no route matches, closing the request body either way.
func TestInprocRoundTripResponses(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Connection", "x-hop")
		w.Header().Set("X-Hop", "must not reach the app")
		w.Header().Set("X-Seen", r.Method+" "+r.URL.Path+" "+string(b))
		io.WriteString(w, "hello")
	}))
	hcm := simpleHCM("c")
	hcm.RouteConfig.VirtualHosts[0].Domains = []string{"svc"}
	e := newProxyEnv(t, hcm, h1Cluster("c", be.hostport()))

	for i := range 5 {
		body := &closeCounter{Reader: strings.NewReader("ping")}
		req, _ := http.NewRequest("POST", "http://svc/echo", body)
		resp, got := inprocGet(t, e, hcm, req)
		if resp.StatusCode != 200 || got != "hello" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, got)
		}
		if v := resp.Header.Get("X-Seen"); v != "POST /echo ping" {
			t.Errorf("backend saw %q", v)
		}
		if v := resp.Header.Get("Server"); v != "meshlet" {
			t.Errorf("Server %q, want meshlet", v)
		}
		if v := resp.Header.Get(HeaderUpstreamHost); v != be.hostport() {
			t.Errorf("%s %q, want %s", HeaderUpstreamHost, v, be.hostport())
		}
		if _, ok := resp.Header["X-Hop"]; ok || resp.Header.Get("Connection") != "" {
			t.Errorf("hop-by-hop fields reached the app: %v", resp.Header)
		}
		if resp.Request != req {
			t.Error("resp.Request is not the application's request")
		}
		if body.closed.Load() == 0 {
			t.Error("request body not closed")
		}
	}
	if n := be.conns.Load(); n != 1 {
		t.Errorf("backend saw %d connections for 5 sequential requests, want 1 (pooled)", n)
	}

	body := &closeCounter{Reader: strings.NewReader("x")}
	req, _ := http.NewRequest("POST", "http://other-host/", body)
	resp, got := inprocGet(t, e, hcm, req)
	if resp.StatusCode != 404 || resp.Header.Get(HeaderResponseFlags) != FlagNoRoute {
		t.Errorf("no route: %d flags %q body %q, want 404 NR", resp.StatusCode, resp.Header.Get(HeaderResponseFlags), got)
	}
	if body.closed.Load() == 0 {
		t.Error("request body not closed on a local reply")
	}
}

// The body streams: the application reads what the upstream flushed while
// the upstream is still sending, and closing the body early cancels the
// upstream request.
func TestInprocRoundTripStreamsAndCancels(t *testing.T) {
	release := make(chan struct{})
	cancelled := make(chan struct{}, 1)
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first;")
		w.(http.Flusher).Flush()
		if r.URL.Path == "/hang" {
			<-r.Context().Done()
			cancelled <- struct{}{}
			return
		}
		<-release
		io.WriteString(w, "second")
	}))
	hcm := simpleHCM("c")
	e := newProxyEnv(t, hcm, h1Cluster("c", be.hostport()))

	req, _ := http.NewRequest("GET", "http://svc/stream", nil)
	resp, err := e.proxy.RoundTrip(req, hcm, nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first;" {
		t.Fatalf("first chunk %q, %v: the body did not stream", buf, err)
	}
	close(release)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "second" {
		t.Fatalf("rest %q, %v", rest, err)
	}
	resp.Body.Close()

	// Early close: the backend's request is cancelled.
	req, _ = http.NewRequest("GET", "http://svc/hang", nil)
	resp, err = e.proxy.RoundTrip(req, hcm, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("closing the body did not cancel the upstream request")
	}
	if _, err := resp.Body.Read(buf); err == nil {
		t.Error("read after Close succeeded")
	}
}

// A response the upstream cuts short ends the body with ErrAborted, not a
// clean EOF; a route timeout before the head is a 504 UT; the
// application's own context ending is its error.
func TestInprocRoundTripFailures(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/cut":
			w.Header().Set("Content-Length", "100")
			io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // net/http closes the connection
		case "/slow":
			select {
			case <-time.After(5 * time.Second):
			case <-r.Context().Done():
			}
		}
	}))
	hcm := simpleHCM("c")
	hcm.RouteConfig.VirtualHosts[0].Routes[0].Action.Timeout = 200 * time.Millisecond
	e := newProxyEnv(t, hcm, h1Cluster("c", be.hostport()))

	req, _ := http.NewRequest("GET", "http://svc/cut", nil)
	resp, err := e.proxy.RoundTrip(req, hcm, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !errors.Is(err, ErrAborted) || string(b) != "partial" {
		t.Errorf("cut body: %q, %v; want \"partial\" and ErrAborted", b, err)
	}

	req, _ = http.NewRequest("GET", "http://svc/slow", nil)
	resp, got := inprocGet(t, e, hcm, req)
	if resp.StatusCode != 504 || resp.Header.Get(HeaderResponseFlags) != FlagUpstreamTimeout {
		t.Errorf("route timeout: %d %q flags %q, want 504 UT", resp.StatusCode, got, resp.Header.Get(HeaderResponseFlags))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	req, _ = http.NewRequestWithContext(ctx, "GET", "http://svc/slow", nil)
	if resp, err := e.proxy.RoundTrip(req, hcm, nil); !errors.Is(err, context.DeadlineExceeded) {
		if resp != nil {
			resp.Body.Close()
		}
		t.Errorf("cancelled request: %v, want context.DeadlineExceeded", err)
	}
}

// Trailers from an HTTP/2 upstream (gRPC's grpc-status) are in
// resp.Trailer once the body is read, and the telemetry sink gets the
// exchange with its status and bytes once the body ended.
func TestInprocRoundTripTrailersAndTelemetry(t *testing.T) {
	be := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.Write([]byte{0, 0, 0, 0, 2, 'h', 'i'})
		w.Header().Set("Grpc-Status", "7")
	}))
	sink := newRecSink("content-type")
	hcm := &state.HTTPConnectionManager{StatPrefix: "test", RouteConfig: routeAll("g")}
	e := newProxyEnvOpts(t, hcm, Options{Sink: sink}, staticCluster("g", state.UpstreamHTTP2, be.addr))

	req, _ := http.NewRequest("POST", "http://svc/pkg.Svc/Call", strings.NewReader("\x00\x00\x00\x00\x00"))
	req.Header.Set("Content-Type", "application/grpc")
	resp, got := inprocGet(t, e, hcm, req)
	if resp.StatusCode != 200 || len(got) != 7 {
		t.Fatalf("%d %q", resp.StatusCode, got)
	}
	if v := resp.Trailer.Get("Grpc-Status"); v != "7" {
		t.Errorf("trailer grpc-status %q, want 7 (trailers %v)", v, resp.Trailer)
	}
	rec, hdr := sink.next(t)
	if rec.ResponseCode != 200 || rec.BytesSent != 7 || rec.UpstreamCluster != "g" || !rec.GRPC || rec.GRPCStatus != 7 {
		t.Errorf("record: code %d sent %d cluster %q grpc %v status %d", rec.ResponseCode, rec.BytesSent, rec.UpstreamCluster, rec.GRPC, rec.GRPCStatus)
	}
	if hdr != "application/grpc" {
		t.Errorf("record response content-type %q", hdr)
	}
}
