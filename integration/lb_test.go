package integration

import (
	"fmt"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// lbMesh is a proxy with one EDS cluster "pool" of three backends a, b, c.
type lbMesh struct {
	cp       *controlPlane
	bs       []*backend
	listener string
}

func startLBMesh(t *testing.T, policy clusterv3.Cluster_LbPolicy, route *routev3.Route, weights []uint32) *lbMesh {
	t.Helper()
	m := &lbMesh{cp: startControlPlane(t)}
	var addrs []string
	for _, n := range []string{"a", "b", "c"} {
		b := startBackend(t, n)
		m.bs = append(m.bs, b)
		addrs = append(addrs, b.addr)
	}
	m.listener = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cla := endpoints(t, "pool", addrs...)
	for i, w := range weights {
		cla.Endpoints[0].LbEndpoints[i].LoadBalancingWeight = wrapperspb.UInt32(w)
	}
	m.cp.set(
		httpListener(t, "http", m.listener, "local"),
		routeConfig("local", route),
		edsCluster("pool", policy, false),
		cla,
	)
	startProxy(t, m.cp, proxyOpts{})
	c := h1Client()
	eventually(t, 10*time.Second, func() error {
		_, be, body, err := get(c, "http://"+m.listener+"/", nil)
		if err != nil || be == "" {
			return fmt.Errorf("not serving: %v %q", err, body)
		}
		return nil
	})
	for _, b := range m.bs {
		b.hits.Store(0)
	}
	return m
}

func (m *lbMesh) hits() []int64 {
	var h []int64
	for _, b := range m.bs {
		h = append(h, b.hits.Load())
	}
	return h
}

func TestLBRoundRobin(t *testing.T) {
	m := startLBMesh(t, clusterv3.Cluster_ROUND_ROBIN, routeTo("pool"), nil)
	c := h1Client()
	for i := 0; i < 300; i++ {
		if code, _, body, err := get(c, "http://"+m.listener+"/", nil); err != nil || code != 200 {
			t.Fatalf("request %d: %d %v %q", i, code, err, body)
		}
	}
	for i, h := range m.hits() {
		if h < 97 || h > 103 {
			t.Errorf("backend %d got %d of 300, want 100 (round robin)", i, h)
		}
	}
}

func TestLBWeightedRoundRobin(t *testing.T) {
	m := startLBMesh(t, clusterv3.Cluster_ROUND_ROBIN, routeTo("pool"), []uint32{1, 2, 7})
	c := h1Client()
	for i := 0; i < 1000; i++ {
		if code, _, _, err := get(c, "http://"+m.listener+"/", nil); err != nil || code != 200 {
			t.Fatalf("request %d: %d %v", i, code, err)
		}
	}
	for i, want := range []int64{100, 200, 700} {
		if h := m.hits()[i]; h < want-10 || h > want+10 {
			t.Errorf("backend %d got %d of 1000, want %d (weights 1:2:7)", i, h, want)
		}
	}
}

func TestLBRandom(t *testing.T) {
	m := startLBMesh(t, clusterv3.Cluster_RANDOM, routeTo("pool"), nil)
	c := h1Client()
	const n = 1500
	for i := 0; i < n; i++ {
		if code, _, _, err := get(c, "http://"+m.listener+"/", nil); err != nil || code != 200 {
			t.Fatalf("request %d: %d %v", i, code, err)
		}
	}
	for i, h := range m.hits() {
		within(t, fmt.Sprintf("backend %d", i), int(h), n, 1.0/3)
	}
}

// TestLBLeastRequest: backend a is slow, so it holds requests longer; least
// request sends it markedly fewer than its round-robin third.
func TestLBLeastRequest(t *testing.T) {
	m := startLBMesh(t, clusterv3.Cluster_LEAST_REQUEST, routeTo("pool"), nil)
	m.bs[0].delay.Store(int64(50 * time.Millisecond))
	c := h1Client()
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 60; i++ {
				_, _, _, _ = get(c, "http://"+m.listener+"/", nil)
			}
		}()
	}
	wg.Wait()
	h := m.hits()
	total := h[0] + h[1] + h[2]
	if total != 360 {
		t.Fatalf("hits %v, want 360 in all", h)
	}
	if h[0]*3 > total/2 { // slow host gets well under a third (less than 1/6)
		t.Errorf("slow backend got %d of %d (hits %v); least request should avoid it", h[0], total, h)
	}
}

func hashRoute(header string) *routev3.Route {
	r := routeTo("pool")
	r.GetRoute().HashPolicy = []*routev3.RouteAction_HashPolicy{{
		PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: header}},
	}}
	return r
}

func TestLBConsistentHash(t *testing.T) {
	for _, policy := range []clusterv3.Cluster_LbPolicy{clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV} {
		t.Run(policy.String(), func(t *testing.T) {
			m := startLBMesh(t, policy, hashRoute("x-user"), nil)
			c := h1Client()
			seen := map[string]bool{}
			for u := 0; u < 40; u++ {
				user := fmt.Sprintf("user-%d", u)
				first := ""
				for i := 0; i < 5; i++ {
					code, be, _, err := get(c, "http://"+m.listener+"/", map[string]string{"x-user": user})
					if err != nil || code != 200 {
						t.Fatalf("%s: %d %v", user, code, err)
					}
					if first == "" {
						first = be
					} else if be != first {
						t.Fatalf("%s went to %s then %s; a hash policy must pin it", user, first, be)
					}
				}
				seen[first] = true
			}
			if len(seen) < 3 {
				t.Errorf("40 users landed on only %d backends", len(seen))
			}
		})
	}
}

// TestLBPriorityFailover: endpoints in priority 0 are unhealthy, so traffic
// fails over to priority 1.
func TestLBPriorityFailover(t *testing.T) {
	cp := startControlPlane(t)
	a, b := startBackend(t, "p0"), startBackend(t, "p1")
	listener := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cla := endpoints(t, "pool", a.addr)
	cla.Endpoints[0].LbEndpoints[0].HealthStatus = 2 // UNHEALTHY
	p1 := endpoints(t, "pool", b.addr).Endpoints[0]
	p1.Priority = 1
	cla.Endpoints = append(cla.Endpoints, p1)
	cp.set(httpListener(t, "http", listener, "local"), routeConfig("local", routeTo("pool")),
		edsCluster("pool", clusterv3.Cluster_ROUND_ROBIN, false), cla)
	startProxy(t, cp, proxyOpts{})
	c := h1Client()
	eventually(t, 10*time.Second, func() error {
		_, be, _, err := get(c, "http://"+listener+"/", nil)
		if err != nil || be != "p1" {
			return fmt.Errorf("backend %q err %v, want p1", be, err)
		}
		return nil
	})
	// P0 healthy again: it takes all traffic.
	cla2 := endpoints(t, "pool", a.addr)
	p1b := endpoints(t, "pool", b.addr).Endpoints[0]
	p1b.Priority = 1
	cla2.Endpoints = []*endpointv3.LocalityLbEndpoints{cla2.Endpoints[0], p1b}
	cp.set(httpListener(t, "http", listener, "local"), routeConfig("local", routeTo("pool")),
		edsCluster("pool", clusterv3.Cluster_ROUND_ROBIN, false), cla2)
	eventually(t, 5*time.Second, func() error {
		for i := 0; i < 10; i++ {
			_, be, _, err := get(c, "http://"+listener+"/", nil)
			if err != nil || be != "p0" {
				return fmt.Errorf("backend %q err %v, want p0", be, err)
			}
		}
		return nil
	})
}
