package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Mesh names the whitebox tests use. None of them is in DNS: they resolve
// through the mesh config only.
const (
	wbWeb         = "web.default.svc.cluster.local"
	wbEcho        = "echo.default.svc.cluster.local"
	wbEchoCluster = "outbound|9000||" + wbEcho
)

// whiteboxMesh is a proxy in whitebox mode fed sidecar-style resources: a
// virtual (bind_to_port: false) 0.0.0.0:8080 listener whose RDS routes
// serve web by its virtual host domains, and a virtual VIP listener
// 10.96.0.10:9000 whose tcp_proxy targets echo's Istio-named cluster.
type whiteboxMesh struct {
	proxy    string // whitebox HTTP proxy address
	fwdEcho  string // forward to echo:9000
	fwdWeb   string // forward to web:8080
	flakyHit *atomic.Int64
}

func startWhiteboxMesh(t *testing.T) *whiteboxMesh {
	t.Helper()
	cp := startControlPlane(t)
	v1, v2 := startBackend(t, "v1"), startBackend(t, "v2")
	var flakyHits atomic.Int64
	flaky := startFnBackend(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		flakyHits.Add(1)
		if n%2 == 1 { // every first attempt fails
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("x-backend", "flaky")
		fmt.Fprint(w, "recovered")
	})
	echo := startTCPEcho(t)

	byHeader := routeTo("v2")
	byHeader.Match.Headers = []*routev3.HeaderMatcher{{
		Name: "x-version",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "v2"},
		}},
	}}
	retried := routeTo("flaky")
	retried.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/flaky"}
	retried.GetRoute().RetryPolicy = retryPolicy("5xx", 2)
	rc := &routev3.RouteConfiguration{Name: "8080", VirtualHosts: []*routev3.VirtualHost{
		{
			Name:    wbWeb + ":8080",
			Domains: []string{wbWeb, wbWeb + ":8080", "web", "web:8080"},
			Routes:  []*routev3.Route{byHeader, retried, weightedRoute(map[string]uint32{"v1": 50, "v2": 50}, "v1", "v2")},
		},
		// Istio's allow_any: must not make every name on :8080 a mesh name.
		{Name: "allow_any", Domains: []string{"*"}, Routes: []*routev3.Route{routeTo("v1")}},
	}}
	web := httpListener(t, "0.0.0.0_8080", "0.0.0.0:8080", "8080")
	web.BindToPort = wrapperspb.Bool(false)
	vip := tcpListener(t, "10.96.0.10_9000", "10.96.0.10:9000", wbEchoCluster)
	vip.BindToPort = wrapperspb.Bool(false)
	cp.set(web, vip, rc,
		edsCluster("v1", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "v1", v1.addr),
		edsCluster("v2", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "v2", v2.addr),
		edsCluster("flaky", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "flaky", flaky.addr),
		edsCluster(wbEchoCluster, clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, wbEchoCluster, echo),
	)
	m := &whiteboxMesh{
		proxy:    fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		fwdEcho:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		fwdWeb:   fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		flakyHit: &flakyHits,
	}
	startProxy(t, cp, proxyOpts{args: []string{
		"--whitebox", m.proxy,
		"--forward", m.fwdEcho + "=" + wbEcho + ":9000",
		"--forward", m.fwdWeb + "=" + wbWeb + ":8080",
	}})
	c := m.client()
	eventually(t, 10*time.Second, func() error {
		code, _, body, err := get(c, "http://"+wbWeb+":8080/", nil)
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("status %d: %s", code, body)
		}
		return nil
	})
	return m
}

// client is an HTTP client configured like an app with HTTP_PROXY set.
func (m *whiteboxMesh) client() *http.Client {
	pu := &url.URL{Scheme: "http", Host: m.proxy}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: http.ProxyURL(pu), MaxIdleConnsPerHost: 16}}
}

// connect opens a CONNECT tunnel to target through the proxy, sending
// early right behind the CONNECT head (before the 200, as TLS clients with
// false start do), and returns the tunnel once the proxy accepted it.
func (m *whiteboxMesh) connect(t *testing.T, target, early string) (*net.TCPConn, *bufio.Reader, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", m.proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n%s", target, target, early)
	br := bufio.NewReader(c)
	status, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("CONNECT %s: %v", target, err)
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("CONNECT %s: %v", target, err)
		}
		if line == "\r\n" {
			break
		}
	}
	return c.(*net.TCPConn), br, strings.TrimSpace(status)
}

func TestWhitebox(t *testing.T) {
	m := startWhiteboxMesh(t)
	c := m.client()

	t.Run("weighted split by mesh name", func(t *testing.T) {
		const n = 200
		got := split(t, c, "http://"+wbWeb+":8080/", n, nil)
		if got["v1"]+got["v2"] != n {
			t.Fatalf("responses %v, want only v1 and v2", got)
		}
		within(t, "v1 share", got["v1"], n, 0.5)
	})

	t.Run("header route", func(t *testing.T) {
		got := split(t, c, "http://"+wbWeb+":8080/", 40, map[string]string{"x-version": "v2"})
		if got["v2"] != 40 {
			t.Fatalf("responses %v, want 40 from v2", got)
		}
	})

	t.Run("short name without port", func(t *testing.T) {
		// http://web/ means port 80, which no listener serves by name:
		// the port matters like for captured traffic.
		code, _, body, err := get(c, "http://web:8080/", map[string]string{"x-version": "v2"})
		if err != nil || code != 200 || !strings.HasPrefix(body, "v2 ") {
			t.Fatalf("web:8080: %d %q %v", code, body, err)
		}
	})

	t.Run("retries", func(t *testing.T) {
		before := m.flakyHit.Load()
		for i := range 10 {
			code, be, body, err := get(c, fmt.Sprintf("http://%s:8080/flaky/%d", wbWeb, i), nil)
			if err != nil || code != 200 || be != "flaky" {
				t.Fatalf("request %d: %d %s %q %v", i, code, be, body, err)
			}
		}
		if hits := m.flakyHit.Load() - before; hits != 20 {
			t.Fatalf("backend saw %d attempts for 10 requests, want 20 (one retry each)", hits)
		}
	})

	t.Run("CONNECT to TCP service", func(t *testing.T) {
		tc, br, status := m.connect(t, wbEcho+":9000", "early|")
		if !strings.Contains(status, " 200 ") {
			t.Fatalf("CONNECT status %q", status)
		}
		if _, err := tc.Write([]byte("late")); err != nil {
			t.Fatal(err)
		}
		_ = tc.CloseWrite()
		got, err := io.ReadAll(br)
		if err != nil || string(got) != "early|late" {
			t.Fatalf("echo through tunnel: %q %v", got, err)
		}
	})

	t.Run("CONNECT to HTTP service", func(t *testing.T) {
		tc, br, status := m.connect(t, wbWeb+":8080", "")
		if !strings.Contains(status, " 200 ") {
			t.Fatalf("CONNECT status %q", status)
		}
		for i := range 3 { // keep-alive inside the tunnel
			fmt.Fprintf(tc, "GET /in-tunnel/%d HTTP/1.1\r\nHost: %s:8080\r\nx-version: v2\r\n\r\n", i, wbWeb)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("x-backend") != "v2" || !strings.Contains(string(body), fmt.Sprintf("/in-tunnel/%d", i)) {
				t.Fatalf("request %d in tunnel: %d %q %q", i, resp.StatusCode, resp.Header.Get("x-backend"), body)
			}
		}
	})

	t.Run("port forward to TCP service", func(t *testing.T) {
		conn, err := net.DialTimeout("tcp", m.fwdEcho, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		payload := strings.Repeat("forwarded ", 10000)
		go func() {
			_, _ = io.WriteString(conn, payload)
			_ = conn.(*net.TCPConn).CloseWrite()
		}()
		got, err := io.ReadAll(conn)
		if err != nil || string(got) != payload {
			t.Fatalf("echo through forward: %d bytes, %v; want %d bytes", len(got), err, len(payload))
		}
	})

	t.Run("port forward to HTTP service", func(t *testing.T) {
		code, be, body, err := get(h1Client(), "http://"+m.fwdWeb+"/", map[string]string{"host": wbWeb, "x-version": "v2"})
		if err != nil || code != 200 || be != "v2" {
			t.Fatalf("through forward: %d %s %q %v", code, be, body, err)
		}
	})

	t.Run("unknown destination", func(t *testing.T) {
		for _, tt := range []struct {
			url    string
			status int
			body   string
		}{
			{"http://nope.default.svc.cluster.local:8080/", 502, "unknown destination"},
			{"http://127.0.0.1:1/", 503, "no mesh listener for 127.0.0.1:1"},
		} {
			code, _, body, err := get(c, tt.url, nil)
			if err != nil || code != tt.status || !strings.Contains(body, tt.body) {
				t.Errorf("GET %s: %d %q %v; want %d with %q", tt.url, code, body, err, tt.status, tt.body)
			}
		}
		_, _, status := m.connect(t, "nope.default.svc.cluster.local:9000", "")
		if !strings.Contains(status, " 502 ") {
			t.Errorf("CONNECT to unknown name: %q, want 502", status)
		}
	})
}
