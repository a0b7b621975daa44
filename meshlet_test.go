package meshlet_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshlet/meshlet"
	"github.com/meshlet/meshlet/controlplane"
	"github.com/meshlet/meshlet/identity"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// startCP serves the YAML resource files of files (name -> content) from
// a real go-control-plane server on loopback.
func startCP(t *testing.T, files map[string]string, vars map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for n, c := range files {
		if err := os.WriteFile(filepath.Join(dir, n), []byte(c), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cp, err := controlplane.New(dir, vars, quiet)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := cp.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	return addr.String()
}

// backend answers with its name; fail503 makes every odd request fail.
func backend(t *testing.T, name string, fail503 bool) (addr string, hits *atomic.Int64) {
	t.Helper()
	hits = new(atomic.Int64)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := hits.Add(1)
		if fail503 && n%2 == 1 {
			w.WriteHeader(503)
			return
		}
		w.Header().Set("x-backend", name)
		fmt.Fprintf(w, "%s %s %s", name, r.Host, r.Header.Get("x-added"))
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), hits
}

func hostPort(t *testing.T, addr string) (string, string) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return h, p
}

const clustersYAML = `resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: v1
  type: EDS
  eds_cluster_config: {eds_config: {ads: {}, resource_api_version: V3}}
  connect_timeout: 1s
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: v2
  type: EDS
  eds_cluster_config: {eds_config: {ads: {}, resource_api_version: V3}}
  connect_timeout: 1s
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: flaky
  type: EDS
  eds_cluster_config: {eds_config: {ads: {}, resource_api_version: V3}}
  connect_timeout: 1s
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: outbound|9000||echo.default.svc.cluster.local
  type: EDS
  eds_cluster_config: {eds_config: {ads: {}, resource_api_version: V3}}
  connect_timeout: 1s
`

func cla(name, port string) string {
	return fmt.Sprintf(`- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: %q
  endpoints:
  - lb_endpoints:
    - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %s}}}
`, name, port)
}

// Route "8080" (Istio's name for the outbound port) is used by the
// outbound listener for port 8080, which the library never binds: it only
// selects the connection manager by port.
const routesYAML = `resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: 0.0.0.0_8080
  address: {socket_address: {address: 0.0.0.0, port_value: 8080}}
  bind_to_port: false
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: out
        rds: {route_config_name: "8080", config_source: {ads: {}, resource_api_version: V3}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: "8080"
  virtual_hosts:
  - name: svc
    domains: ["*"]
    routes:
    - match:
        prefix: /
        headers: [{name: x-version, string_match: {exact: v2}}]
      route: {cluster: v2}
      request_headers_to_add: [{header: {key: x-added, value: by-route}}]
    - match: {prefix: /retry}
      route:
        cluster: flaky
        retry_policy: {retry_on: 5xx, num_retries: 2}
    - match: {prefix: /}
      route:
        weighted_clusters:
          clusters:
          - {name: v1, weight: 80}
          - {name: v2, weight: 20}
`

type mesh struct {
	ads       string
	flakyHits *atomic.Int64
	echoAddr  string
}

func startMesh(t *testing.T) *mesh {
	t.Helper()
	v1, _ := backend(t, "v1", false)
	v2, _ := backend(t, "v2", false)
	flaky, flakyHits := backend(t, "flaky", true)
	echo := tcpEcho(t)
	var eps strings.Builder
	eps.WriteString("resources:\n")
	for name, addr := range map[string]string{"v1": v1, "v2": v2, "flaky": flaky, "outbound|9000||echo.default.svc.cluster.local": echo} {
		_, p := hostPort(t, addr)
		eps.WriteString(cla(name, p))
	}
	ads := startCP(t, map[string]string{"clusters.yaml": clustersYAML, "routes.yaml": routesYAML, "endpoints.yaml": eps.String()}, nil)
	return &mesh{ads: ads, flakyHits: flakyHits, echoAddr: echo}
}

func tcpEcho(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

func get(t *testing.T, c *http.Client, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The RoundTripper routes in process with the route configuration chosen
// by name (RouteConfig) or by the destination port.
func TestRoundTripper(t *testing.T) {
	m := startMesh(t)
	for _, sel := range []string{"RouteConfig", "port"} {
		t.Run(sel, func(t *testing.T) {
			srv := &meshlet.Server{ADSAddress: m.ads, Logger: quiet}
			if sel == "RouteConfig" {
				srv.RouteConfig = "8080"
			}
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Start(ctx); err != nil {
				t.Fatal(err)
			}
			c := &http.Client{Transport: srv.RoundTripper()}
			url := "http://svc.default.svc.cluster.local:8080"

			t.Run("weighted split", func(t *testing.T) {
				const n = 400
				got := map[string]int{}
				for range n {
					code, body := get(t, c, url+"/", nil)
					if code != 200 {
						t.Fatalf("status %d %q", code, body)
					}
					got[strings.Fields(body)[0]]++
				}
				// 80/20 within 4.5 binomial standard deviations (n=400: +-36).
				if v1 := got["v1"]; v1 < 320-36 || v1 > 320+36 || got["v1"]+got["v2"] != n {
					t.Errorf("split %v, want about 320 v1 / 80 v2", got)
				}
			})
			t.Run("header routing and rewrites", func(t *testing.T) {
				for range 20 {
					code, body := get(t, c, url+"/", map[string]string{"x-version": "v2"})
					if code != 200 || body != "v2 svc.default.svc.cluster.local:8080 by-route" {
						t.Fatalf("got %d %q", code, body)
					}
				}
			})
			t.Run("retries", func(t *testing.T) {
				before := m.flakyHits.Load()
				for range 10 {
					if code, body := get(t, c, url+"/retry", nil); code != 200 || !strings.HasPrefix(body, "flaky") {
						t.Fatalf("got %d %q: the 503 was not retried", code, body)
					}
				}
				// Every odd request fails: 10 answers cost 20 attempts.
				if d := m.flakyHits.Load() - before; d != 20 {
					t.Errorf("backend saw %d attempts, want 20", d)
				}
			})
			t.Run("no route", func(t *testing.T) {
				if sel != "port" {
					t.Skip("RouteConfig routes every port")
				}
				code, _ := get(t, c, "http://svc:9999/", nil)
				if code != 404 {
					t.Errorf("status %d for a port without routes, want 404 (NR)", code)
				}
			})
		})
	}
}

// Dial reaches a TCP service through its Istio-named cluster.
func TestDial(t *testing.T) {
	m := startMesh(t)
	srv := &meshlet.Server{ADSAddress: m.ads, Logger: quiet}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := srv.Dial(ctx, "tcp", "echo.default.svc.cluster.local:9000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q %v", buf, err)
	}
	if _, err := srv.Dial(ctx, "tcp", "nothing.default.svc:1"); !errors.Is(err, meshlet.ErrNoCluster) {
		t.Errorf("dial to an unknown service: %v, want ErrNoCluster", err)
	}
	if _, err := srv.Dial(ctx, "udp", "echo.default.svc.cluster.local:9000"); err == nil {
		t.Error("udp dial succeeded")
	}
}

// inboundBootstrap has a listener whose network RBAC admits only
// spiffe://cluster.local/ns/default/sa/good.
const inboundBootstrap = `node: {id: lib, cluster: lib}
static_resources:
  listeners:
  - name: inbound
    address: {socket_address: {address: 127.0.0.1, port_value: 15006}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: in
          rules:
            action: ALLOW
            policies:
              good:
                permissions: [{any: true}]
                principals: [{authenticated: {principal_name: {exact: "spiffe://cluster.local/ns/default/sa/good"}}}]
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: in
          cluster: local
  clusters:
  - name: local
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: local
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]
`

// Listen terminates mTLS with the identity and applies the named
// listener's network RBAC.
func TestListen(t *testing.T) {
	ca, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	other, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	issue := func(ca *identity.CA, sa string) identity.Static {
		cert, err := ca.Issue(identity.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: sa}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return identity.Static{Cert: cert, Pool: ca.Roots()}
	}
	srv := &meshlet.Server{BootstrapYAML: []byte(inboundBootstrap), Identity: issue(ca, "server"),
		InboundListener: "inbound", Logger: quiet}
	defer srv.Close()
	ln, err := srv.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()

	tests := []struct {
		name   string
		client identity.Static
		want   bool
	}{
		{"allowed identity", issue(ca, "good"), true},
		{"identity denied by RBAC", issue(ca, "bad"), false},
		{"certificate from another CA", issue(other, "good"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := identity.ClientConfig(tc.client, nil)
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", ln.Addr().String(), cfg)
			ok := err == nil
			if ok {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				_, err = c.Write([]byte("hi"))
				buf := make([]byte, 2)
				if err == nil {
					_, err = io.ReadFull(c, buf)
				}
				ok = err == nil && string(buf) == "hi"
			}
			if ok != tc.want {
				t.Errorf("echo through Listen: ok=%v (err %v), want %v", ok, err, tc.want)
			}
		})
	}
	ln.Close()
	<-served
}

// Fields are read at first use: a later change has no effect and Start
// reports it.
func TestOptionsFrozenAfterFirstUse(t *testing.T) {
	m := startMesh(t)
	srv := &meshlet.Server{ADSAddress: m.ads, RouteConfig: "8080", Logger: quiet}
	defer srv.Close()
	c := &http.Client{Transport: srv.RoundTripper()}
	// First use is the request itself (lazy start).
	if code, _ := get(t, c, "http://svc:1234/", map[string]string{"x-version": "v2"}); code != 200 {
		t.Fatalf("status %d", code)
	}
	srv.RouteConfig = "missing"
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Start(ctx); !errors.Is(err, meshlet.ErrFrozen) || !strings.Contains(err.Error(), "RouteConfig") {
		t.Errorf("Start after a change: %v, want ErrFrozen naming RouteConfig", err)
	}
	if code, body := get(t, c, "http://svc:1234/", map[string]string{"x-version": "v2"}); code != 200 || !strings.HasPrefix(body, "v2") {
		t.Errorf("after the change: %d %q, want the original route", code, body)
	}
	srv.Close()
	if err := srv.Start(ctx); !errors.Is(err, meshlet.ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}
}

func TestStartErrors(t *testing.T) {
	tests := []struct {
		name string
		srv  *meshlet.Server
		want string
	}{
		{"nothing configured", &meshlet.Server{}, "required"},
		{"both bootstraps", &meshlet.Server{Bootstrap: "x.yaml", BootstrapYAML: []byte("{}")}, "mutually exclusive"},
		{"bad bootstrap", &meshlet.Server{BootstrapYAML: []byte("static_resources: {clusters: [{name: 1}]}: x")}, "config"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.srv.Start(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start: %v, want an error containing %q", err, tc.want)
			}
			tc.srv.Close()
		})
	}
	srv := &meshlet.Server{BootstrapYAML: []byte(inboundBootstrap)}
	defer srv.Close()
	if _, err := srv.Listen("tcp", "127.0.0.1:0"); !errors.Is(err, meshlet.ErrNoIdentity) {
		t.Errorf("Listen without Identity: %v", err)
	}
}
