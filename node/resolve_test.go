package node

import (
	"math"
	"net/netip"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// Routing preferences rank endpoints only when the service's mode asks
// for it (STRICT, FAILOVER, or a mode newer than meshlet's proto, read as
// FAILOVER); with the mode unset they are ignored, as in ztunnel. A scope
// newer than the proto never matches.
func TestResolveRoutingPreferenceNeedsMode(t *testing.T) {
	src := wl("src", "10.0.2.1", "n1", state.TunnelHBONE)
	near := wl("near", "10.0.2.2", "n1", state.TunnelHBONE)
	far := wl("far", "10.0.2.3", "n3", state.TunnelHBONE)
	vip := netip.MustParseAddrPort("10.96.0.3:80")
	node := []state.LBScope{state.LBScopeNode}

	cases := []struct {
		name string
		lb   *state.LoadBalancing
		ws   []*state.Workload
		want map[string]int // picks out of 6; "error" counts failures
	}{
		{"mode unset ignores preferences", &state.LoadBalancing{RoutingPreference: node},
			[]*state.Workload{near, far}, map[string]int{"near": 3, "far": 3}},
		{"failover ranks", &state.LoadBalancing{Mode: state.LBModeFailover, RoutingPreference: node},
			[]*state.Workload{near, far}, map[string]int{"near": 6}},
		{"strict ranks", &state.LoadBalancing{Mode: state.LBModeStrict, RoutingPreference: node},
			[]*state.Workload{near, far}, map[string]int{"near": 6}},
		{"unknown mode ranks as failover", &state.LoadBalancing{Mode: state.LBModeUnknown, RoutingPreference: node},
			[]*state.Workload{near, far}, map[string]int{"near": 6}},
		{"unknown mode falls back like failover", &state.LoadBalancing{Mode: state.LBModeUnknown, RoutingPreference: node},
			[]*state.Workload{far}, map[string]int{"far": 6}},
		{"unknown scope stops failover ranking", &state.LoadBalancing{Mode: state.LBModeFailover,
			RoutingPreference: []state.LBScope{state.LBScopeUnknown, state.LBScopeNode}},
			[]*state.Workload{near, far}, map[string]int{"near": 3, "far": 3}},
		{"unknown scope fails strict closed", &state.LoadBalancing{Mode: state.LBModeStrict,
			RoutingPreference: []state.LBScope{state.LBScopeUnknown}},
			[]*state.Workload{near, far}, map[string]int{"error": 6}},
		{"unspecified scope matches everyone under strict", &state.LoadBalancing{Mode: state.LBModeStrict,
			RoutingPreference: []state.LBScope{state.LBScopeUnspecified}},
			[]*state.Workload{near, far}, map[string]int{"near": 3, "far": 3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newMesh(t)
			svc := &state.Service{Name: "s", Namespace: "default", Hostname: "s.default.svc.cluster.local",
				Addresses: []state.NetworkAddr{{Addr: vip.Addr()}}, Ports: []state.PortMapping{{ServicePort: 80}},
				LoadBalancing: c.lb}
			var ws []*state.Workload
			for _, w := range c.ws {
				cp := *w
				cp.Services = map[string][]state.PortMapping{svc.Key(): nil}
				ws = append(ws, &cp)
			}
			m.set(append(ws, src), []*state.Service{svc}, nil)
			p := m.proxy("n1")
			p.TunnelAddr = defaultTunnelAddr
			got := map[string]int{}
			for range 6 {
				up, err := p.Resolve(src, vip)
				if err != nil {
					got["error"]++
					continue
				}
				got[up.Workload.UID]++
			}
			if len(got) != len(c.want) {
				t.Fatalf("picks = %v, want %v", got, c.want)
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Fatalf("picks = %v, want %v", got, c.want)
				}
			}
		})
	}
}

// TestResolveCapacity: endpoints of the chosen rank are picked in
// proportion to their Workload capacity, as ztunnel weighs them; capacity
// 0 is never picked, and a rank whose endpoints all have capacity 0 has
// no usable endpoint (no failover to a worse rank, as in ztunnel). Each
// random count must lie within 5 binomial standard deviations.
func TestResolveCapacity(t *testing.T) {
	src := wl("src", "10.0.3.1", "n1", state.TunnelHBONE)
	vip := netip.MustParseAddrPort("10.96.0.4:80")
	capw := func(uid, ip, node string, c uint32) *state.Workload {
		w := wl(uid, ip, node, state.TunnelHBONE)
		w.Capacity = c
		return w
	}
	failover := &state.LoadBalancing{Mode: state.LBModeFailover, RoutingPreference: []state.LBScope{state.LBScopeNode}}
	const n = 4000
	cases := []struct {
		name string
		lb   *state.LoadBalancing
		ws   []*state.Workload
		want map[string]float64 // expected share of the n picks; "error" counts failures
		// exact: the counts must be exactly share*n (taken in turn).
		exact bool
	}{
		{"equal capacities are taken in turn", nil,
			[]*state.Workload{capw("a", "10.0.3.2", "n1", 2), capw("b", "10.0.3.3", "n1", 2)},
			map[string]float64{"a": 0.5, "b": 0.5}, true},
		{"weighted by capacity", nil,
			[]*state.Workload{capw("a", "10.0.3.2", "n1", 1), capw("b", "10.0.3.3", "n1", 3)},
			map[string]float64{"a": 0.25, "b": 0.75}, false},
		{"three weights", nil,
			[]*state.Workload{capw("a", "10.0.3.2", "n1", 1), capw("b", "10.0.3.3", "n1", 2), capw("c", "10.0.3.4", "n1", 5)},
			map[string]float64{"a": 0.125, "b": 0.25, "c": 0.625}, false},
		{"capacity 0 is never picked", nil,
			[]*state.Workload{capw("a", "10.0.3.2", "n1", 0), capw("b", "10.0.3.3", "n1", 1)},
			map[string]float64{"b": 1}, true},
		{"all capacity 0: no endpoint", nil,
			[]*state.Workload{capw("a", "10.0.3.2", "n1", 0), capw("b", "10.0.3.3", "n1", 0)},
			map[string]float64{"error": 1}, true},
		{"weights apply within the best rank only", failover,
			[]*state.Workload{capw("a", "10.0.3.2", "n1", 1), capw("b", "10.0.3.3", "n1", 4), capw("far", "10.0.3.4", "n2", 100)},
			map[string]float64{"a": 0.2, "b": 0.8}, false},
		{"a best rank of capacity 0 does not fail over", failover,
			[]*state.Workload{capw("a", "10.0.3.2", "n1", 0), capw("far", "10.0.3.4", "n2", 1)},
			map[string]float64{"error": 1}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newMesh(t)
			svc := &state.Service{Name: "s", Namespace: "default", Hostname: "s.default.svc.cluster.local",
				Addresses: []state.NetworkAddr{{Addr: vip.Addr()}}, Ports: []state.PortMapping{{ServicePort: 80}},
				LoadBalancing: c.lb}
			var ws []*state.Workload
			for _, w := range c.ws {
				w.Services = map[string][]state.PortMapping{svc.Key(): nil}
				ws = append(ws, w)
			}
			m.set(append(ws, src), []*state.Service{svc}, nil)
			p := m.proxy("n1")
			p.TunnelAddr = defaultTunnelAddr
			got := map[string]int{}
			for range n {
				up, err := p.Resolve(src, vip)
				if err != nil {
					got["error"]++
					continue
				}
				got[up.Workload.UID]++
			}
			for k := range got {
				if _, ok := c.want[k]; !ok {
					t.Fatalf("picks = %v, want shares %v", got, c.want)
				}
			}
			for k, share := range c.want {
				mean := share * n
				tol := 5 * math.Sqrt(n*share*(1-share))
				if c.exact {
					tol = 0
				}
				if d := math.Abs(float64(got[k]) - mean); d > tol {
					t.Errorf("%s: %d picks of %d, want %.0f ± %.0f (all: %v)", k, got[k], n, mean, tol, got)
				}
			}
		})
	}
}
