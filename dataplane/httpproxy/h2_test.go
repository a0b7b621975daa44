package httpproxy

// The drain test drives one connection by hand with x/net's ClientConn to
// watch GOAWAY arrive.
//lint:file-ignore SA1019 x/net/http2 ClientConn exposes per-connection state

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshlet/meshlet/state"
)

// echoHandler answers with method, path, selected request headers and the
// request body, plus a declared and an undeclared trailer.
func echoHandler(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Trailer", "X-Declared")
	w.Header().Set("X-Backend-Proto", r.Proto)
	w.Header().Set("X-Seen-Host", r.Host)
	w.Header().Set("X-Seen-Path", r.RequestURI)
	w.Header().Set("X-Seen-Te", r.Header.Get("Te"))
	w.Header().Set("X-Seen-Xfp", r.Header.Get("X-Forwarded-Proto"))
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "%s %s %s", r.Method, r.URL.Path, body)
	w.Header().Set("X-Declared", "d1")
	w.Header().Set(http.TrailerPrefix+"X-Undeclared", "u1")
}

func TestH2ProxyToH2cBackend(t *testing.T) {
	h2LeakCheck(t)
	b := newH2Backend(t, 0, http.HandlerFunc(echoHandler))
	e := newH2Env(t, h2EnvOpts{
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
		rc:       routeAll("be"),
	})
	client, _ := h2cClient(t)

	tests := []struct {
		name, method, path, body string
		header                   map[string]string
		wantBody, wantPath       string
		wantTE                   string
	}{
		{name: "get", method: "GET", path: "/a/b?x=1", wantBody: "GET /a/b ", wantPath: "/a/b?x=1"},
		{name: "post body", method: "POST", path: "/p", body: strings.Repeat("z", 100000), wantBody: "POST /p " + strings.Repeat("z", 100000), wantPath: "/p"},
		{name: "escaped path kept byte for byte", method: "GET", path: "/a%2Fb/%7Ec", wantBody: "GET /a/b/~c ", wantPath: "/a%2Fb/%7Ec"},
		{name: "te trailers kept", method: "POST", path: "/t", header: map[string]string{"Te": "trailers"}, wantBody: "POST /t ", wantPath: "/t", wantTE: "trailers"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, "http://"+e.addr+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 200 || string(got) != tc.wantBody {
				t.Fatalf("got %d %.80q, want 200 %.80q", resp.StatusCode, got, tc.wantBody)
			}
			checks := map[string]string{
				"X-Backend-Proto":   "HTTP/2.0",
				"X-Seen-Path":       tc.wantPath,
				"X-Seen-Host":       e.addr,
				"X-Seen-Te":         tc.wantTE,
				"X-Seen-Xfp":        "http",
				"Server":            "meshlet",
				HeaderResponseFlags: "-",
				HeaderUpstreamHost:  b.addr,
				"Content-Type":      "text/plain",
			}
			for k, want := range checks {
				if v := resp.Header.Get(k); v != want {
					t.Errorf("header %s = %q, want %q", k, v, want)
				}
			}
			if resp.Trailer.Get("X-Declared") != "d1" || resp.Trailer.Get("X-Undeclared") != "u1" {
				t.Errorf("trailers = %v, want X-Declared d1 and X-Undeclared u1", resp.Trailer)
			}
		})
	}
	if n := b.conns.Load(); n != 1 {
		t.Errorf("backend saw %d connections, want 1 (pooled)", n)
	}
}

func TestH2TLSDownstream(t *testing.T) {
	h2LeakCheck(t)
	cert, pool, _, _ := testCert(t)
	b := newH2Backend(t, 0, http.HandlerFunc(echoHandler))
	e := newH2Env(t, h2EnvOpts{
		tls:      &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}},
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamUseDownstream, b.addr)},
		rc:       routeAll("be"),
	})
	resp, err := h2TLSClient(t, pool).Get("https://" + e.addr + "/secure")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "GET /secure " {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	if resp.TLS == nil || resp.TLS.NegotiatedProtocol != "h2" {
		t.Fatalf("client did not negotiate h2: %+v", resp.TLS)
	}
	// UseDownstream with an HTTP/2 client means HTTP/2 upstream.
	if got := resp.Header.Get("X-Backend-Proto"); got != "HTTP/2.0" {
		t.Errorf("backend proto %q, want HTTP/2.0", got)
	}
	if got := resp.Header.Get("X-Seen-Xfp"); got != "https" {
		t.Errorf("x-forwarded-proto %q, want https", got)
	}
}

// barrierHandler holds every request until n have arrived, so they are
// provably concurrent, then answers.
type barrierHandler struct {
	n       int
	mu      sync.Mutex
	arrived int
	release chan struct{}
}

func newBarrier(n int) *barrierHandler { return &barrierHandler{n: n, release: make(chan struct{})} }

func (b *barrierHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.arrived++
	if b.arrived == b.n {
		close(b.release)
	}
	b.mu.Unlock()
	select {
	case <-b.release:
	case <-r.Context().Done():
		return
	case <-time.After(10 * time.Second):
		http.Error(w, "barrier timeout", 500)
		return
	}
	io.WriteString(w, "ok")
}

func TestH2StreamLimitsOpenConnections(t *testing.T) {
	tests := []struct {
		name          string
		clusterCap    uint32 // cluster max_concurrent_streams
		peerCap       int    // backend SETTINGS_MAX_CONCURRENT_STREAMS (0 = default 250)
		streams       int
		minConns      int64
		maxConns      int64
		maxPoolStream int
	}{
		{name: "100 streams one conn", streams: 100, minConns: 1, maxConns: 1},
		{name: "cluster cap 10", clusterCap: 10, streams: 100, minConns: 10, maxConns: 10},
		{name: "cluster cap 30 ceil", clusterCap: 30, streams: 100, minConns: 4, maxConns: 4},
		{name: "peer settings 8", peerCap: 8, streams: 40, minConns: 5, maxConns: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h2LeakCheck(t)
			b := newH2Backend(t, tc.peerCap, newBarrier(tc.streams))
			c := staticCluster("be", state.UpstreamHTTP2, b.addr)
			c.HTTP2MaxConcurrentStreams = tc.clusterCap
			e := newH2Env(t, h2EnvOpts{clusters: []*state.Cluster{c}, rc: routeAll("be")})
			// One downstream connection carrying every stream.
			_, tr := h2cClient(t)
			cc, err := tr.NewClientConn(context.Background(), "http", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			var wg sync.WaitGroup
			var failed atomic.Int64
			errs := make(chan error, tc.streams)
			for i := range tc.streams {
				wg.Add(1)
				go func() {
					defer wg.Done()
					req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/s/%d", e.addr, i), nil)
					resp, err := cc.RoundTrip(req)
					if err != nil {
						failed.Add(1)
						errs <- err
						return
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(body) != "ok" {
						failed.Add(1)
						errs <- fmt.Errorf("stream %d: %d %q flags=%s", i, resp.StatusCode, body, resp.Header.Get(HeaderResponseFlags))
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if n := e.accept.Load(); n != 1 {
				t.Errorf("client used %d downstream connections, want 1", n)
			}
			if n := b.conns.Load(); n < tc.minConns || n > tc.maxConns {
				t.Errorf("backend saw %d connections, want %d..%d", n, tc.minConns, tc.maxConns)
			}
		})
	}
}

func TestH2LocalReplies(t *testing.T) {
	h2LeakCheck(t)
	// A port with nothing listening: connect fails (UF).
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()

	b := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/reset":
			panic(http.ErrAbortHandler) // RST_STREAM before headers
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
		io.WriteString(w, "ok")
	}))
	empty := staticCluster("empty", state.UpstreamHTTP2)
	rc := &state.RouteConfig{Name: "rc", VirtualHosts: []*state.VirtualHost{{
		Name: "vh", Domains: []string{"*"},
		Routes: []*state.Route{
			{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/nc", CaseSensitive: true}, Action: &state.RouteAction{Cluster: "missing"}},
			{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/uh", CaseSensitive: true}, Action: &state.RouteAction{Cluster: "empty"}},
			{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/uf", CaseSensitive: true}, Action: &state.RouteAction{Cluster: "dead"}},
			{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/slow", CaseSensitive: true}, Action: &state.RouteAction{Cluster: "be", Timeout: 150 * time.Millisecond}},
			{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/direct", CaseSensitive: true}, DirectResponse: &state.DirectResponseAction{Status: 418, Body: []byte("teapot")}},
			{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/ok", CaseSensitive: true}, Action: &state.RouteAction{Cluster: "be"}},
			{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/reset", CaseSensitive: true}, Action: &state.RouteAction{Cluster: "be"}},
		},
	}}}
	e := newH2Env(t, h2EnvOpts{
		clusters: []*state.Cluster{
			staticCluster("be", state.UpstreamHTTP2, b.addr),
			staticCluster("dead", state.UpstreamHTTP2, deadAddr),
			empty,
		},
		rc: rc,
	})
	client, _ := h2cClient(t)
	tests := []struct {
		path      string
		status    int
		flags     string
		bodyMatch string
	}{
		{"/ok", 200, "-", "ok"},
		{"/none", 404, "NR", ""},
		{"/nc", 503, "NC", ""},
		{"/uh", 503, "UH", BodyNoHealthyUpstream},
		{"/uf", 503, "UF", BodyConnFailure},
		{"/reset", 503, "UR", BodyRemoteReset},
		{"/slow", 504, "UT", BodyUpstreamTimeout},
		{"/direct", 418, "-", "teapot"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := client.Get("http://" + e.addr + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || string(body) != tc.bodyMatch {
				t.Errorf("got %d %q, want %d %q", resp.StatusCode, body, tc.status, tc.bodyMatch)
			}
			if f := resp.Header.Get(HeaderResponseFlags); f != tc.flags {
				t.Errorf("flags %q, want %q", f, tc.flags)
			}
		})
	}
}

// TestH2DownstreamCancelResetsUpstream: a client that resets its stream
// makes the proxy cancel the upstream stream (DC), so the backend sees its
// request context end.
func TestH2DownstreamCancelResetsUpstream(t *testing.T) {
	h2LeakCheck(t)
	started := make(chan struct{})
	cancelled := make(chan struct{})
	b := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		close(started)
		select {
		case <-r.Context().Done():
			close(cancelled)
		case <-time.After(5 * time.Second):
		}
	}))
	e := newH2Env(t, h2EnvOpts{
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
		rc:       routeAll("be"),
	})
	client, _ := h2cClient(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+e.addr+"/hang", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	<-started
	cancel()
	resp.Body.Close()
	select {
	case <-cancelled:
	case <-time.After(3 * time.Second):
		t.Fatal("upstream stream was not cancelled after the client reset")
	}
}

// TestH2DrainFinishesInflight: a drain sends GOAWAY; the stream in flight
// completes, and the connection then closes.
func TestH2DrainFinishesInflight(t *testing.T) {
	h2LeakCheck(t)
	arrived := make(chan struct{})
	proceed := make(chan struct{})
	b := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(arrived)
			<-proceed
		}
		io.WriteString(w, "done")
	}))
	e := newH2Env(t, h2EnvOpts{
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
		rc:       routeAll("be"),
	})
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tr := &http2.Transport{AllowHTTP: true}
	cc, err := tr.NewClientConn(conn)
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+e.addr+"/slow", nil)
		resp, err := cc.RoundTrip(req)
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{string(b), err}
	}()
	<-arrived
	e.drain()
	// The GOAWAY reaches the client: it stops taking new requests.
	deadline := time.Now().Add(3 * time.Second)
	for cc.CanTakeNewRequest() {
		if time.Now().After(deadline) {
			t.Fatal("no GOAWAY after drain")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(proceed)
	r := <-res
	if r.err != nil || r.body != "done" {
		t.Fatalf("in-flight stream: %q, %v; want done", r.body, r.err)
	}
	// The server closes the connection once no stream is left.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	deadline = time.Now().Add(5 * time.Second)
	for !cc.State().Closed {
		if time.Now().After(deadline) {
			t.Fatal("connection not closed after drain")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestH2PoolRedialsDeadConnection: a pooled connection that died is dropped
// and the next request dials a new one.
func TestH2PoolRedialsDeadConnection(t *testing.T) {
	h2LeakCheck(t)
	b := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	e := newH2Env(t, h2EnvOpts{
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
		rc:       routeAll("be"),
	})
	client, _ := h2cClient(t)
	get := func() {
		t.Helper()
		resp, err := client.Get("http://" + e.addr + "/x")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("status %d flags %s", resp.StatusCode, resp.Header.Get(HeaderResponseFlags))
		}
	}
	get()
	pool := h2PoolFor(e, "be", b.addr)
	if pool == nil || pool.connCount() != 1 {
		t.Fatalf("want one pooled connection after the first request")
	}
	pool.mu.Lock()
	cc := pool.conns[0].cc
	pool.mu.Unlock()
	cc.Close()
	get()
	if n := b.conns.Load(); n != 2 {
		t.Errorf("backend saw %d connections, want 2 (redialled)", n)
	}
	if pool.connCount() != 1 {
		t.Errorf("pool holds %d connections, want 1", pool.connCount())
	}
}

// TestH2PoolWorksAfterClose: a caller holding a pool whose endpoint left the
// cluster can still send; its private connection is closed afterwards.
func TestH2PoolWorksAfterClose(t *testing.T) {
	h2LeakCheck(t)
	b := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	active := &b.active
	e := newH2Env(t, h2EnvOpts{
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
		rc:       routeAll("be"),
	})
	pool := h2PoolFor(e, "be", b.addr)
	if err := pool.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		req, _ := http.NewRequest("GET", "http://"+b.addr+"/after-close", nil)
		resp, err := e.p.roundTripH2(context.Background(), pool.ep, req)
		if err != nil {
			t.Fatalf("round trip %d after Close: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != "ok" {
			t.Fatalf("body %q", body)
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for active.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d backend connections still open after use of a closed pool", active.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if pool.connCount() != 0 {
		t.Errorf("closed pool keeps %d connections", pool.connCount())
	}
}

// TestH2TLSUpstream: a cluster with TLS negotiates h2 by ALPN; a backend
// that cannot speak h2 is a connect failure (UF), not a garbled exchange.
func TestH2TLSUpstream(t *testing.T) {
	h2LeakCheck(t)
	cert, _, certPEM, _ := testCert(t)
	tests := []struct {
		name      string
		alpn      []string
		status    int
		flags     string
		wantProto string
	}{
		{"alpn h2", []string{"h2"}, 200, "-", "HTTP/2.0"},
		{"alpn http/1.1 only", []string{"http/1.1"}, 503, FlagUpstreamConnFailure, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{
				Handler:      http.HandlerFunc(echoHandler),
				TLSConfig:    &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: tc.alpn},
				TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
			}
			if tc.alpn[0] == "h2" {
				srv.TLSNextProto = nil
			}
			done := make(chan struct{})
			go func() { defer close(done); _ = srv.ServeTLS(ln, "", "") }()
			defer func() { srv.Close(); <-done }()

			c := staticCluster("tls", state.UpstreamHTTP2, ln.Addr().String())
			c.TLS = &state.UpstreamTLS{SNI: "localhost", RootCAPEM: certPEM}
			e := newH2Env(t, h2EnvOpts{clusters: []*state.Cluster{c}, rc: routeAll("tls")})
			client, _ := h2cClient(t)
			resp, err := client.Get("http://" + e.addr + "/over-tls")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get(HeaderResponseFlags) != tc.flags || resp.Header.Get("X-Backend-Proto") != tc.wantProto {
				t.Fatalf("got %d flags %s proto %q, want %d flags %s proto %q", resp.StatusCode, resp.Header.Get(HeaderResponseFlags), resp.Header.Get("X-Backend-Proto"), tc.status, tc.flags, tc.wantProto)
			}
		})
	}
}

func TestH2URLKeepsPath(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/", "/"},
		{"/a/b", "/a/b"},
		{"/a%2Fb?x=%20y", "/a%2Fb?x=%20y"},
		{"/q?", "/q?"},
		{"//double/slash", "//double/slash"},
		{"/with space", "/with space"},
	}
	for _, tc := range tests {
		u := h2URL(tc.in, "example.com")
		u.Scheme = "http"
		if got := u.RequestURI(); got != tc.want {
			t.Errorf("h2URL(%q).RequestURI() = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestH2StripHopByHop(t *testing.T) {
	tests := []struct {
		name string
		in   http.Header
		want http.Header
	}{
		{"connection-named", http.Header{"Connection": {"close, X-Foo"}, "X-Foo": {"1"}, "X-Bar": {"2"}}, http.Header{"X-Bar": {"2"}}},
		{"te trailers kept", http.Header{"Te": {"trailers"}}, http.Header{"Te": {"trailers"}}},
		{"te gzip dropped", http.Header{"Te": {"gzip"}}, http.Header{}},
		{"te list with trailers", http.Header{"Te": {"gzip, Trailers"}}, http.Header{"Te": {"trailers"}}},
		{"upgrade and keep-alive", http.Header{"Upgrade": {"h2c"}, "Keep-Alive": {"5"}, "Transfer-Encoding": {"chunked"}, "A": {"b"}}, http.Header{"A": {"b"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h2StripHopByHop(tc.in)
			if fmt.Sprint(tc.in) != fmt.Sprint(tc.want) {
				t.Errorf("got %v, want %v", tc.in, tc.want)
			}
		})
	}
}

// TestH2CodecAuto: through ServeConn with codec AUTO, an h2c prior-knowledge
// client and a TLS client that negotiated h2 both reach the HTTP/2 path.
func TestH2CodecAuto(t *testing.T) {
	h2LeakCheck(t)
	cert, pool, _, _ := testCert(t)
	b := newH2Backend(t, 0, http.HandlerFunc(echoHandler))
	tests := []struct {
		name   string
		tls    *tls.Config
		client *http.Client
		scheme string
	}{
		{name: "h2c prior knowledge", scheme: "http"},
		{name: "tls alpn h2", scheme: "https", tls: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}, client: h2TLSClient(t, pool)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newH2Env(t, h2EnvOpts{
				serve:    serveViaServeConn,
				tls:      tc.tls,
				hcm:      &state.HTTPConnectionManager{Codec: state.CodecAuto},
				clusters: []*state.Cluster{staticCluster("be", state.UpstreamUseDownstream, b.addr)},
				rc:       routeAll("be"),
			})
			client := tc.client
			if client == nil {
				client, _ = h2cClient(t)
			}
			resp, err := client.Post(tc.scheme+"://"+e.addr+"/auto", "text/plain", strings.NewReader("hi"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "POST /auto hi" {
				t.Fatalf("got %d %q flags %s", resp.StatusCode, body, resp.Header.Get(HeaderResponseFlags))
			}
			if resp.ProtoMajor != 2 || resp.Header.Get("X-Backend-Proto") != "HTTP/2.0" {
				t.Errorf("client proto %s, backend proto %s; want HTTP/2 both", resp.Proto, resp.Header.Get("X-Backend-Proto"))
			}
			if resp.Trailer.Get("X-Undeclared") != "u1" {
				t.Errorf("trailers %v", resp.Trailer)
			}
		})
	}
}

// TestH2ToH1Backend: an HTTP/2 client reaches an HTTP/1.1-only cluster; the
// proxy converts, streams the body and keeps the response intact.
func TestH2ToH1Backend(t *testing.T) {
	h2LeakCheck(t)
	b := newH2Backend(t, 0, http.HandlerFunc(echoHandler))
	e := newH2Env(t, h2EnvOpts{
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP1, b.addr)},
		rc:       routeAll("be"),
	})
	client, _ := h2cClient(t)
	for _, body := range []string{"", "small", strings.Repeat("x", 200000)} {
		resp, err := client.Post("http://"+e.addr+"/h1", "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(got) != "POST /h1 "+body {
			t.Fatalf("got %d %.60q flags %s", resp.StatusCode, got, resp.Header.Get(HeaderResponseFlags))
		}
		if p := resp.Header.Get("X-Backend-Proto"); p != "HTTP/1.1" {
			t.Errorf("backend proto %q, want HTTP/1.1", p)
		}
	}
}

// TestH1ClientToH2Backend: an HTTP/1.1 client reaches an HTTP/2 cluster
// through ServeConn (the HTTP/1.1 side calls roundTripH2).
func TestH1ClientToH2Backend(t *testing.T) {
	h2LeakCheck(t)
	b := newH2Backend(t, 0, http.HandlerFunc(echoHandler))
	e := newH2Env(t, h2EnvOpts{
		serve:    serveViaServeConn,
		hcm:      &state.HTTPConnectionManager{Codec: state.CodecAuto},
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
		rc:       routeAll("be"),
	})
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Post("http://"+e.addr+"/from-h1", "text/plain", strings.NewReader("abc"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "POST /from-h1 abc" || resp.ProtoMajor != 1 {
		t.Fatalf("got %s %d %q flags %s", resp.Proto, resp.StatusCode, got, resp.Header.Get(HeaderResponseFlags))
	}
	if p := resp.Header.Get("X-Backend-Proto"); p != "HTTP/2.0" {
		t.Errorf("backend proto %q, want HTTP/2.0", p)
	}
}

// TestH2StreamsWithoutBuffering: each response chunk reaches the client
// before the backend writes the next one (the backend waits for the client
// to acknowledge), so a buffering proxy would deadlock here.
func TestH2StreamsWithoutBuffering(t *testing.T) {
	h2LeakCheck(t)
	ack := make(chan struct{})
	b := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		for i := range 3 {
			fmt.Fprintf(w, "chunk%d;", i)
			rc.Flush()
			select {
			case <-ack:
			case <-time.After(5 * time.Second):
				return
			}
		}
	}))
	e := newH2Env(t, h2EnvOpts{
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
		rc:       routeAll("be"),
	})
	client, _ := h2cClient(t)
	resp, err := client.Get("http://" + e.addr + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 64)
	for i := range 3 {
		want := fmt.Sprintf("chunk%d;", i)
		deadline := time.AfterFunc(3*time.Second, func() { resp.Body.Close() })
		n, err := io.ReadFull(resp.Body, buf[:len(want)])
		deadline.Stop()
		if err != nil || string(buf[:n]) != want {
			t.Fatalf("chunk %d: %q, %v; want %q before the next is written", i, buf[:n], err, want)
		}
		ack <- struct{}{}
	}
}

// TestH2RewritesAndHeaders: route rewrites, header mutations and the
// forwarded headers apply to HTTP/2 streams.
func TestH2RewritesAndHeaders(t *testing.T) {
	h2LeakCheck(t)
	b := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Seen-Path", r.RequestURI)
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Added", r.Header.Get("X-Added"))
		w.Header().Set("X-Seen-Removed", r.Header.Get("X-Remove-Me"))
		w.Header().Set("X-Seen-Request-Id", r.Header.Get("X-Request-Id"))
		w.Header().Set("X-Seen-Xff", r.Header.Get("X-Forwarded-For"))
		w.Header().Set("X-Upstream-Secret", "s")
	}))
	rc := &state.RouteConfig{Name: "rc", VirtualHosts: []*state.VirtualHost{{
		Name: "vh", Domains: []string{"*"},
		Routes: []*state.Route{{
			Match:  state.RouteMatch{Kind: state.PathPrefix, Path: "/old/", CaseSensitive: true},
			Action: &state.RouteAction{Cluster: "be", PrefixRewrite: "/new/", HostRewriteLiteral: "rewritten.example"},
			Headers: state.HeaderMutation{
				RequestAdd:     []state.HeaderValueOption{{Key: "x-added", Value: "yes"}},
				RequestRemove:  []string{"x-remove-me"},
				ResponseAdd:    []state.HeaderValueOption{{Key: "x-resp-added", Value: "r1"}},
				ResponseRemove: []string{"x-upstream-secret"},
			},
		}},
	}}}
	e := newH2Env(t, h2EnvOpts{
		hcm:      &state.HTTPConnectionManager{Codec: state.CodecHTTP2, GenerateRequestID: true, UseRemoteAddress: true},
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
		rc:       rc,
	})
	client, _ := h2cClient(t)
	req, _ := http.NewRequest("GET", "http://"+e.addr+"/old/x?q=1", nil)
	req.Header.Set("X-Remove-Me", "1")
	req.Header.Set("X-Forwarded-For", "10.9.9.9")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := map[string]string{
		"X-Seen-Path":       "/new/x?q=1",
		"X-Seen-Host":       "rewritten.example",
		"X-Seen-Added":      "yes",
		"X-Seen-Removed":    "",
		"X-Seen-Xff":        "10.9.9.9,127.0.0.1",
		"X-Resp-Added":      "r1",
		"X-Upstream-Secret": "",
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if id := resp.Header.Get("X-Seen-Request-Id"); len(id) != 36 {
		t.Errorf("x-request-id %q, want a generated UUID", id)
	}
}

// TestH2ConnectionSettings: the HCM's stream and header limits reach the
// client in SETTINGS and are enforced.
func TestH2ConnectionSettings(t *testing.T) {
	h2LeakCheck(t)
	b := newH2Backend(t, 0, http.HandlerFunc(echoHandler))
	tests := []struct {
		name        string
		maxStreams  uint32
		wantStreams uint32
	}{
		{"default", 0, defaultH2MaxConcurrentStreams},
		{"configured", 7, 7},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newH2Env(t, h2EnvOpts{
				hcm:      &state.HTTPConnectionManager{Codec: state.CodecHTTP2, HTTP2MaxConcurrentStreams: tc.maxStreams, MaxRequestHeadersKB: 2},
				clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
				rc:       routeAll("be"),
			})
			conn, err := net.Dial("tcp", e.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			cc, err := (&http2.Transport{AllowHTTP: true}).NewClientConn(conn)
			if err != nil {
				t.Fatal(err)
			}
			defer cc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := cc.Ping(ctx); err != nil { // ack follows the server's SETTINGS
				t.Fatal(err)
			}
			if got := cc.State().MaxConcurrentStreams; got != tc.wantStreams {
				t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS = %d, want %d", got, tc.wantStreams)
			}
			small, _ := http.NewRequest("GET", "http://"+e.addr+"/ok", nil)
			small.Header.Set("X-Fill", strings.Repeat("a", 1000))
			resp, err := cc.RoundTrip(small)
			if err != nil {
				t.Fatalf("request under the header limit: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("request under the header limit: status %d", resp.StatusCode)
			}
			big, _ := http.NewRequest("GET", "http://"+e.addr+"/big", nil)
			big.Header.Set("X-Fill", strings.Repeat("a", 8000))
			resp, err = cc.RoundTrip(big)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
					t.Fatalf("request over max_request_headers_kb: status %d, want 431 or refusal", resp.StatusCode)
				}
			}
		})
	}
}

// TestH2StreamIdleTimeout: a stream with no bytes for stream_idle_timeout
// gets 408 SI before response headers; a slow but steady stream does not.
func TestH2StreamIdleTimeout(t *testing.T) {
	h2LeakCheck(t)
	b := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/silent":
			select {
			case <-r.Context().Done():
			case <-time.After(3 * time.Second):
			}
		case "/steady":
			rc := http.NewResponseController(w)
			for range 6 {
				io.WriteString(w, "x")
				rc.Flush()
				time.Sleep(50 * time.Millisecond)
			}
		}
	}))
	e := newH2Env(t, h2EnvOpts{
		hcm:      &state.HTTPConnectionManager{Codec: state.CodecHTTP2, StreamIdleTimeout: 150 * time.Millisecond},
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
		rc:       routeAll("be"),
	})
	client, _ := h2cClient(t)
	tests := []struct {
		path   string
		status int
		flags  string
		body   string
	}{
		{"/silent", 408, FlagStreamIdleTimeout, BodyStreamTimeout},
		{"/steady", 200, "-", "xxxxxx"},
	}
	for _, tc := range tests {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := client.Get("http://" + e.addr + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != tc.status || string(body) != tc.body || resp.Header.Get(HeaderResponseFlags) != tc.flags {
				t.Fatalf("got %d %q %v flags %s, want %d %q flags %s", resp.StatusCode, body, err, resp.Header.Get(HeaderResponseFlags), tc.status, tc.body, tc.flags)
			}
		})
	}
}
