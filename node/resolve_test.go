package node

import (
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
