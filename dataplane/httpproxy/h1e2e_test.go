package httpproxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
	"golang.org/x/net/websocket"
)

// h1EchoHandler reports what the backend received.
func h1EchoHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("/reset", func(w http.ResponseWriter, r *http.Request) {
		c, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			c.Close()
		}
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		// No content-length: net/http answers chunked.
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "part%d;", i)
			w.(http.Flusher).Flush()
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Path", r.URL.RequestURI())
		w.Header().Set("X-Seen-TE", strings.Join(r.TransferEncoding, ","))
		w.Header().Set("X-Seen-Len", fmt.Sprint(r.ContentLength))
		for _, k := range []string{"X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id", "X-Req-Mut", "Connection", "X-Hop", "Expect"} {
			w.Header().Set("X-Seen-"+k, strings.Join(r.Header.Values(k), "|"))
		}
		w.Header().Set("Server", "backend")
		w.Header().Set("X-Remove-Me", "1")
		w.Write(body)
	})
	return mux
}

// deadAddr returns a loopback address nobody listens on.
func deadAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func routeTo(prefix, cluster string) *state.Route {
	return &state.Route{Name: prefix, Match: state.RouteMatch{Kind: state.PathPrefix, Path: prefix, CaseSensitive: true},
		Action: &state.RouteAction{Cluster: cluster, Timeout: 5 * time.Second}}
}

func featureHCM() *state.HTTPConnectionManager {
	slow := routeTo("/slow", "be")
	slow.Action.Timeout = 200 * time.Millisecond
	rewrite := routeTo("/old", "be")
	rewrite.Action.PrefixRewrite = "/new"
	rewrite.Action.HostRewriteLiteral = "rewritten.example"
	mut := routeTo("/mut", "be")
	mut.Headers = state.HeaderMutation{
		RequestAdd:     []state.HeaderValueOption{{Key: "x-req-mut", Value: "route"}, {Key: "x-req-mut", Value: "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", Action: state.AppendIfExistsOrAdd}},
		ResponseAdd:    []state.HeaderValueOption{{Key: "x-resp-mut", Value: "route", Action: state.OverwriteIfExistsOrAdd}},
		ResponseRemove: []string{"x-remove-me"},
	}
	nc404 := routeTo("/nc404", "missing")
	nc404.Action.ClusterNotFoundCode = 404
	noWS := routeTo("/nows", "be")
	noWS.Action.UpgradeWebSocketDisabled = true
	return &state.HTTPConnectionManager{
		StatPrefix:        "test",
		GenerateRequestID: true,
		UseRemoteAddress:  true,
		RouteConfig: &state.RouteConfig{Name: "rc",
			Headers: state.HeaderMutation{ResponseAdd: []state.HeaderValueOption{{Key: "x-rc", Value: "rc"}}},
			VirtualHosts: []*state.VirtualHost{{
				Name: "vh", Domains: []string{"*"},
				Headers: state.HeaderMutation{ResponseAdd: []state.HeaderValueOption{{Key: "x-resp-mut", Value: "vhost", Action: state.AddIfAbsent}}},
				Routes: []*state.Route{
					{Name: "redirect", Match: state.RouteMatch{Kind: state.PathExact, Path: "/redirect", CaseSensitive: true},
						Redirect: &state.RedirectAction{PathRedirect: "/moved", ResponseCode: 302}},
					{Name: "direct", Match: state.RouteMatch{Kind: state.PathExact, Path: "/direct", CaseSensitive: true},
						DirectResponse: &state.DirectResponseAction{Status: 418, Body: []byte("short and stout")}},
					routeTo("/nocluster", "missing"), nc404,
					routeTo("/nohealthy", "empty"),
					routeTo("/connfail", "dead"),
					slow, rewrite, mut, noWS,
					routeTo("/h2", "h2be"),
					routeTo("/", "be"),
				},
			}, {
				Name: "only-known", Domains: []string{"known.example"},
				Routes: []*state.Route{routeTo("/known", "be")},
			}},
		},
	}
}

func newFeatureEnv(t *testing.T) (*proxyEnv, *backend) {
	be := newBackend(t, h1EchoHandler())
	empty := &state.Cluster{Name: "empty", Type: state.ClusterStatic, LoadAssignment: &state.ClusterLoadAssignment{ClusterName: "empty"}}
	e := newProxyEnv(t, featureHCM(), h1Cluster("be", be.hostport()), h1Cluster("dead", deadAddr(t)), empty)
	return e, be
}

func TestProxyH1LocalRepliesAndFlags(t *testing.T) {
	e, _ := newFeatureEnv(t)
	tests := []struct {
		name, req  string
		status     int
		flags      string
		body       string
		header     string // "name: value" expected on the response
		keepsAlive bool
	}{
		{"no route (vhost)", "GET /known HTTP/1.1\r\nHost: known.example\r\n\r\n", 200, "-", "", "", true},
		{"no route", "GET /other HTTP/1.1\r\nHost: known.example\r\n\r\n", 404, "NR", "", "", true},
		{"unknown cluster", "GET /nocluster HTTP/1.1\r\nHost: a\r\n\r\n", 503, "NC", "", "", true},
		{"unknown cluster 404", "GET /nc404 HTTP/1.1\r\nHost: a\r\n\r\n", 404, "NC", "", "", true},
		{"no healthy upstream", "GET /nohealthy HTTP/1.1\r\nHost: a\r\n\r\n", 503, "UH", BodyNoHealthyUpstream, "", true},
		{"connect failure", "GET /connfail HTTP/1.1\r\nHost: a\r\n\r\n", 503, "UF", BodyConnFailure, "", true},
		{"route timeout", "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n", 504, "UT", BodyUpstreamTimeout, "", true},
		{"upstream closes", "GET /reset HTTP/1.1\r\nHost: a\r\n\r\n", 503, "UC", BodyConnTermination, "", true},
		{"redirect", "GET /redirect?x=1 HTTP/1.1\r\nHost: a.example\r\n\r\n", 302, "-", "", "location: http://a.example/moved?x=1", true},
		{"direct response", "GET /direct HTTP/1.1\r\nHost: a\r\n\r\n", 418, "-", "short and stout", "x-rc: rc", true},
		{"websocket disabled", "GET /nows HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n", 403, "-", "", "", true},
		{"local reply with unread body closes", "POST /nocluster HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", 503, "NC", "", "connection: close", false},
		{"bad request", "GET / HTTP/1.1\r\nHost: a\r\nX : y\r\n\r\n", 400, "DPE", "", "connection: close", false},
		{"smuggling CL+TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, "DPE", "", "", false},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", 400, "DPE", "", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial()
			resp, body := c.roundTrip(t, tc.req)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d (body %q)", resp.StatusCode, tc.status, body)
			}
			if f := resp.Header.Get(HeaderResponseFlags); f != tc.flags {
				t.Errorf("flags %q, want %q", f, tc.flags)
			}
			if tc.body != "" && body != tc.body {
				t.Errorf("body %q, want %q", body, tc.body)
			}
			if tc.header == "connection: close" {
				if !resp.Close {
					t.Errorf("response without connection: close")
				}
			} else if tc.header != "" {
				k, v, _ := strings.Cut(tc.header, ": ")
				if got := resp.Header.Get(k); got != v {
					t.Errorf("%s: %q, want %q", k, got, v)
				}
			}
			if resp.Header.Get("Server") != "meshlet" || resp.Header.Get("Date") == "" {
				t.Errorf("server %q date %q", resp.Header.Get("Server"), resp.Header.Get("Date"))
			}
			// A keep-alive connection answers a second request; a closed
			// one reports EOF.
			_, err := io.WriteString(c, "GET /direct HTTP/1.1\r\nHost: a\r\n\r\n")
			if err == nil {
				var r2 *http.Response
				r2, err = http.ReadResponse(c.br, nil)
				if err == nil {
					r2.Body.Close()
				}
			}
			if (err == nil) != tc.keepsAlive {
				t.Errorf("second request err %v, keep-alive want %v", err, tc.keepsAlive)
			}
		})
	}
}

func TestProxyH1ForwardedHeadersMutationsRewrites(t *testing.T) {
	e, _ := newFeatureEnv(t)
	c := e.dial()
	resp, _ := c.roundTrip(t, "GET /mut/x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.1.1.1\r\nConnection: keep-alive, x-hop\r\nKeep-Alive: 5\r\nTE: trailers\r\n\r\n")
	want := map[string]string{
		"X-Seen-X-Forwarded-For":   "10.1.1.1,127.0.0.1",
		"X-Seen-X-Forwarded-Proto": "http",
		"X-Seen-X-Req-Mut":         "route|127.0.0.1",
		"X-Seen-Connection":        "",
		"X-Resp-Mut":               "route",
		"X-Rc":                     "rc",
		"X-Remove-Me":              "",
		"Server":                   "meshlet",
		HeaderUpstreamHost:         strings.TrimPrefix(resp.Header.Get(HeaderUpstreamHost), ""),
	}
	for k, v := range want {
		if got := resp.Header.Get(k); got != v {
			t.Errorf("%s = %q, want %q", k, got, v)
		}
	}
	if id := resp.Header.Get("X-Seen-X-Request-Id"); len(id) != 36 || id[14] != '4' {
		t.Errorf("x-request-id %q is not a UUIDv4", id)
	}
	resp, _ = c.roundTrip(t, "GET /old/p?q=1 HTTP/1.1\r\nHost: a\r\n\r\n")
	if p, h := resp.Header.Get("X-Seen-Path"), resp.Header.Get("X-Seen-Host"); p != "/new/p?q=1" || h != "rewritten.example" {
		t.Errorf("rewrite: path %q host %q", p, h)
	}
}

func TestProxyH1Bodies(t *testing.T) {
	e, be := newFeatureEnv(t)
	c := e.dial()
	// Chunked request with extensions and trailers: re-encoded chunked.
	resp, body := c.roundTrip(t, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: v\r\n\r\n")
	if body != "hello world" || resp.Header.Get("X-Seen-Te") != "chunked" {
		t.Fatalf("chunked request: body %q te %q", body, resp.Header.Get("X-Seen-Te"))
	}
	// Content-Length request.
	resp, body = c.roundTrip(t, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcde")
	if body != "abcde" || resp.Header.Get("X-Seen-Len") != "5" {
		t.Fatalf("length request: body %q len %q", body, resp.Header.Get("X-Seen-Len"))
	}
	// 100-continue answered by the proxy; Expect not forwarded.
	if _, err := io.WriteString(c, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	line, err := c.br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("interim %q %v", line, err)
	}
	if l, _ := c.br.ReadString('\n'); l != "\r\n" {
		t.Fatalf("interim end %q", l)
	}
	io.WriteString(c, "xyz")
	resp, body = c.read(t, "POST")
	if body != "xyz" || resp.Header.Get("X-Seen-Expect") != "" {
		t.Fatalf("100-continue: body %q expect %q", body, resp.Header.Get("X-Seen-Expect"))
	}
	// Chunked response streamed as chunked.
	resp, body = c.roundTrip(t, "GET /stream HTTP/1.1\r\nHost: a\r\n\r\n")
	if body != "part0;part1;part2;" || len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("chunked response: %q %v", body, resp.TransferEncoding)
	}
	// HTTP/1.0 client gets the chunked upstream body close-delimited.
	if _, err := io.WriteString(c, "GET /stream HTTP/1.0\r\nHost: a\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	all, _ := io.ReadAll(c.br)
	if !bytes.HasSuffix(all, []byte("\r\n\r\npart0;part1;part2;")) || !bytes.Contains(all, []byte("connection: close")) {
		t.Fatalf("1.0 response %q", all)
	}
	if n := be.conns.Load(); n > 2 {
		t.Errorf("backend connections %d, want reuse", n)
	}
}

func TestProxyH1Pipelining(t *testing.T) {
	e, _ := newFeatureEnv(t)
	c := e.dial()
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhiGET /direct HTTP/1.1\r\nHost: a\r\n\r\n")
	for i, want := range []string{"/a", "/b", ""} {
		resp, body := c.read(t, "GET")
		if got := resp.Header.Get("X-Seen-Path"); got != want {
			t.Fatalf("response %d for %q, want %q", i, got, want)
		}
		if i == 1 && body != "hi" {
			t.Fatalf("body %q", body)
		}
	}
}

func TestProxyH1WebSocketEcho(t *testing.T) {
	wsSrv := newBackend(t, websocket.Handler(func(ws *websocket.Conn) { io.Copy(ws, ws) }))
	e := newProxyEnv(t, simpleHCM("ws"), h1Cluster("ws", wsSrv.hostport()))
	cfg, err := websocket.NewConfig("ws://"+e.addr+"/echo", "http://origin.example/")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("dial through proxy: %v", err)
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(5 * time.Second))
	for _, msg := range []string{"hello", strings.Repeat("z", 70000)} {
		if _, err := ws.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		// The echo server may split a long message into several frames.
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(ws, got); err != nil || string(got) != msg {
			t.Fatalf("echo len %d err %v", len(got), err)
		}
	}
}

func TestProxyH1Drain(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			<-release
		}
		io.WriteString(w, "ok")
	}))
	e := newProxyEnv(t, simpleHCM("c"), h1Cluster("c", be.hostport()))
	idle := e.dial()
	if resp, _ := idle.roundTrip(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	busy := e.dial()
	io.WriteString(busy, "GET /hold HTTP/1.1\r\nHost: a\r\n\r\n")
	time.Sleep(100 * time.Millisecond)
	e.cancel()
	// The idle connection is closed without a response.
	idle.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := idle.br.ReadByte(); err != io.EOF {
		t.Fatalf("idle connection after drain: %v, want EOF", err)
	}
	close(release)
	resp, body := busy.read(t, "GET")
	if body != "ok" || !resp.Close {
		t.Fatalf("in-flight response %q close=%v, want connection: close", body, resp.Close)
	}
}

func TestRoundTripH1(t *testing.T) {
	be := newBackend(t, h1EchoHandler())
	e := newProxyEnv(t, simpleHCM("be"), h1Cluster("be", be.hostport()))
	c := e.mgr.Cluster("be")
	h, err := c.Pick(nil)
	if err != nil {
		t.Fatal(err)
	}
	ep := c.Endpoint(h)
	for i, body := range []string{"", "known length", "unknown length"} {
		var rb io.Reader
		if body != "" {
			rb = strings.NewReader(body)
		}
		req, _ := http.NewRequest("POST", "http://svc.example/echo?i=1", rb)
		if i == 2 {
			req.Body = io.NopCloser(strings.NewReader(body))
			req.ContentLength = -1
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := e.proxy.roundTripH1(ctx, ep, req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if err != nil || string(got) != body || resp.Header.Get("X-Seen-Host") != "svc.example" || resp.Header.Get("X-Seen-Path") != "/echo?i=1" {
			t.Fatalf("case %d: body %q err %v headers %v", i, got, err, resp.Header)
		}
	}
	if n := be.conns.Load(); n != 1 {
		t.Errorf("backend connections %d, want 1", n)
	}
	// Dial failures are recognizable as such.
	dead := h1Cluster("dead", deadAddr(t))
	e.store.Update(func(s *state.Snapshot) bool { s.Clusters["dead"] = dead; return true })
	dc := e.mgr.Cluster("dead")
	dh, _ := dc.Pick(nil)
	req, _ := http.NewRequest("GET", "http://x/", nil)
	if _, err := e.proxy.roundTripH1(context.Background(), dc.Endpoint(dh), req); !isDialError(err) {
		t.Fatalf("dead endpoint: %v, want a dial error", err)
	}
}

func TestProxyH1ToH2Upstream(t *testing.T) {
	srv := &http.Server{Protocols: new(http.Protocols), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("X-Seen-Host", r.Host)
		w.Write(body)
		w.(http.Flusher).Flush() // no content-length: chunked downstream
	})}
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	cl := h1Cluster("h2", ln.Addr().String())
	cl.Protocol = state.UpstreamHTTP2
	e := newProxyEnv(t, simpleHCM("h2"), cl)
	c := e.dial()
	resp, body := c.roundTrip(t, "POST /x HTTP/1.1\r\nHost: h2.example\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	if resp.StatusCode != 200 || body != "abc" || resp.Header.Get("X-Proto") != "HTTP/2.0" || resp.Header.Get("X-Seen-Host") != "h2.example" {
		t.Fatalf("status %d body %q headers %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = c.roundTrip(t, "GET /y HTTP/1.1\r\nHost: h2.example\r\n\r\n")
	if resp.StatusCode != 200 || body != "" || resp.Header.Get("X-Proto") != "HTTP/2.0" {
		t.Fatalf("second request: status %d body %q", resp.StatusCode, body)
	}
}

func TestProxyH1DownstreamTimeouts(t *testing.T) {
	be := newBackend(t, h1EchoHandler())
	hcm := simpleHCM("be")
	hcm.IdleTimeout = 150 * time.Millisecond
	hcm.RequestHeadersTimeout = 150 * time.Millisecond
	hcm.StreamIdleTimeout = 150 * time.Millisecond
	e := newProxyEnv(t, hcm, h1Cluster("be", be.hostport()))
	tests := []struct {
		name, partial string
		wantStatus    int // 0: closed without a response
		wantBody      string
	}{
		{"idle keep-alive closes", "", 0, ""},
		{"slow head", "GET / HTTP/1.1\r\nHost: a\r\n", 408, BodyHeaderTimeout},
		{"stalled body", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc", 408, BodyStreamTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial()
			io.WriteString(c, tc.partial)
			if tc.wantStatus == 0 {
				if _, err := c.br.ReadByte(); err != io.EOF {
					t.Fatalf("got %v, want EOF", err)
				}
				return
			}
			resp, body := c.read(t, "GET")
			if resp.StatusCode != tc.wantStatus || body != tc.wantBody || !resp.Close {
				t.Fatalf("%d %q close=%v", resp.StatusCode, body, resp.Close)
			}
		})
	}
}
