package integration

import (
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// mesh is a control plane, a proxy, and two backends v1/v2 behind EDS
// clusters, with an HTTP listener whose routes tests replace.
type mesh struct {
	cp       *controlPlane
	proxy    *proxy
	v1, v2   *backend
	listener string // proxy listener address
	t        *testing.T
}

func startMesh(t *testing.T, delta bool, routes ...*routev3.Route) *mesh {
	t.Helper()
	return startMeshWith(t, delta, "/", routes...)
}

// startMeshOn is startMesh (SotW) waiting for readyPath to be served.
func startMeshOn(t *testing.T, readyPath string, routes ...*routev3.Route) *mesh {
	t.Helper()
	return startMeshWith(t, false, readyPath, routes...)
}

func startMeshWith(t *testing.T, delta bool, readyPath string, routes ...*routev3.Route) *mesh {
	t.Helper()
	m := &mesh{t: t, cp: startControlPlane(t), v1: startBackend(t, "v1"), v2: startBackend(t, "v2")}
	m.listener = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	m.push(routes...)
	m.proxy = startProxy(t, m.cp, proxyOpts{delta: delta})
	m.waitServing(readyPath)
	return m
}

func (m *mesh) resources(routes ...*routev3.Route) []types.Resource {
	return []types.Resource{
		httpListener(m.t, "http", m.listener, "local"),
		routeConfig("local", routes...),
		edsCluster("v1", clusterv3.Cluster_ROUND_ROBIN, false),
		edsCluster("v2", clusterv3.Cluster_ROUND_ROBIN, false),
		endpoints(m.t, "v1", m.v1.addr),
		endpoints(m.t, "v2", m.v2.addr),
	}
}

func (m *mesh) push(routes ...*routev3.Route) string {
	return m.cp.set(m.resources(routes...)...)
}

func (m *mesh) url(path string) string { return "http://" + m.listener + path }

// waitServing waits until the listener answers with a backend.
func (m *mesh) waitServing(path string) {
	m.t.Helper()
	c := h1Client()
	eventually(m.t, 10*time.Second, func() error {
		code, be, body, err := get(c, m.url(path), nil)
		if err != nil {
			return err
		}
		if be == "" {
			return fmt.Errorf("status %d body %q", code, body)
		}
		return nil
	})
}

// split sends n requests with bounded concurrency and counts backends.
func split(t *testing.T, c *http.Client, url string, n int, hdr map[string]string) map[string]int {
	t.Helper()
	var mu sync.Mutex
	counts := map[string]int{}
	var wg sync.WaitGroup
	next := make(chan struct{})
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				code, be, body, err := get(c, url, hdr)
				mu.Lock()
				switch {
				case err != nil:
					counts["error: "+err.Error()]++
				case code != 200:
					counts[fmt.Sprintf("status %d: %s", code, strings.TrimSpace(body))]++
				default:
					counts[be]++
				}
				mu.Unlock()
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	return counts
}

// within checks that got/n is p within 4.5 binomial standard deviations.
func within(t *testing.T, what string, got, n int, p float64) {
	t.Helper()
	sd := math.Sqrt(float64(n) * p * (1 - p))
	if d := math.Abs(float64(got) - p*float64(n)); d > 4.5*sd {
		t.Errorf("%s: %d of %d, want %.0f +- %.0f", what, got, n, p*float64(n), 4.5*sd)
	}
}

func TestWeightedSplit(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(fmt.Sprintf("delta=%v", delta), func(t *testing.T) {
			m := startMesh(t, delta, weightedRoute(map[string]uint32{"v1": 80, "v2": 20}, "v1", "v2"))
			const n = 2000
			counts := split(t, h1Client(), m.url("/split"), n, nil)
			if counts["v1"]+counts["v2"] != n {
				t.Fatalf("failed requests: %v", counts)
			}
			within(t, "v1 share", counts["v1"], n, 0.8)
		})
	}
}

func TestHeaderAndGRPCMethodRouting(t *testing.T) {
	canary := &routev3.Route{
		Match: &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Headers: []*routev3.HeaderMatcher{{
				Name: "x-canary",
				HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
					MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "true"},
				}},
			}},
		},
		Action: routeTo("v2").Action,
	}
	method := &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/pkg.Echo/Canary"}},
		Action: routeTo("v2").Action,
	}
	regex := &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
			Regex: `/users/[0-9]+/v2`,
		}}},
		Action: routeTo("v2").Action,
	}
	m := startMesh(t, false, canary, method, regex, routeTo("v1"))
	c := h1Client()
	cases := []struct {
		path string
		hdr  map[string]string
		want string
	}{
		{"/", nil, "v1"},
		{"/", map[string]string{"x-canary": "true"}, "v2"},
		{"/", map[string]string{"x-canary": "false"}, "v1"},
		{"/pkg.Echo/Canary", nil, "v2"},
		{"/pkg.Echo/Other", nil, "v1"},
		{"/users/42/v2", nil, "v2"},
		{"/users/x/v2", nil, "v1"},
	}
	for _, tc := range cases {
		code, be, body, err := get(c, m.url(tc.path), tc.hdr)
		if err != nil || code != 200 || be != tc.want {
			t.Errorf("GET %s %v: code %d backend %q err %v body %q, want %s", tc.path, tc.hdr, code, be, err, body, tc.want)
		}
	}
	// h2c prior knowledge downstream reaches the same routes.
	code, be, _, err := get(h2cClient(), m.url("/"), map[string]string{"x-canary": "true"})
	if err != nil || code != 200 || be != "v2" {
		t.Errorf("h2c canary: code %d backend %q err %v", code, be, err)
	}
}

func TestResponseFlags(t *testing.T) {
	m := startMeshOn(t, "/ok", &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/nc"}},
		Action: routeTo("missing").Action,
	}, &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/ok"}},
		Action: routeTo("v1").Action,
	})
	c := h1Client()
	for _, tc := range []struct {
		path string
		code int
		flag string
	}{
		{"/none", 404, "NR"},
		{"/nc", 503, "NC"},
		{"/ok", 200, "-"},
	} {
		resp, err := c.Get(m.url(tc.path))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.code || resp.Header.Get("x-meshlet-response-flags") != tc.flag {
			t.Errorf("GET %s: %d flags %q, want %d %q", tc.path, resp.StatusCode, resp.Header.Get("x-meshlet-response-flags"), tc.code, tc.flag)
		}
	}
	// No healthy upstream: v1's endpoints go away.
	res := m.resources(routeTo("v1"))
	for i, r := range res {
		if cla, ok := r.(interface{ GetClusterName() string }); ok && cla.GetClusterName() == "v1" {
			res[i] = endpoints(t, "v1")
		}
	}
	m.cp.set(res...)
	eventually(t, 5*time.Second, func() error {
		resp, err := c.Get(m.url("/"))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("x-meshlet-response-flags") != "UH" {
			return fmt.Errorf("status %d flags %q", resp.StatusCode, resp.Header.Get("x-meshlet-response-flags"))
		}
		return nil
	})
	// Connect failure: an endpoint nobody listens on.
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	for i, r := range res {
		if cla, ok := r.(interface{ GetClusterName() string }); ok && cla.GetClusterName() == "v1" {
			res[i] = endpoints(t, "v1", dead)
		}
	}
	m.cp.set(res...)
	eventually(t, 5*time.Second, func() error {
		resp, err := c.Get(m.url("/"))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get("x-meshlet-response-flags") != "UF" {
			return fmt.Errorf("status %d flags %q", resp.StatusCode, resp.Header.Get("x-meshlet-response-flags"))
		}
		return nil
	})
}
