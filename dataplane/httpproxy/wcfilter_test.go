package httpproxy

import (
	"testing"

	"github.com/meshlet/meshlet/state"
)

// TestWeightedClusterFilterOverride: typed_per_filter_config follows
// Envoy's precedence, weighted cluster entry > route > virtual host >
// route configuration. The listener's RBAC denies everything; the route
// configuration turns it off; route /a turns it off too but its entry
// "wb" denies again, so exactly the requests routed to wb get 403.
func TestWeightedClusterFilterOverride(t *testing.T) {
	denyAll := &state.HTTPRBAC{Rules: &state.RBACRules{Action: state.RBACAllow}} // ALLOW without policies
	wa, wb, be := newPathBackend(t), newPathBackend(t), newPathBackend(t)
	h := filterHCM(&state.HTTPFilter{Name: state.FilterRBAC, RBAC: denyAll})
	h.RouteConfig.FilterOverrides = map[string]*state.FilterOverride{state.FilterRBAC: {Disabled: true}}
	vh := h.RouteConfig.VirtualHosts[0]
	a := vh.Routes[0].Action
	a.Cluster = ""
	a.WeightedClusters = []state.WeightedCluster{
		{Name: "wa", Weight: 1},
		{Name: "wb", Weight: 1, FilterOverrides: map[string]*state.FilterOverride{state.FilterRBAC: {RBAC: denyAll}}},
	}
	a.TotalWeight = 2
	vh.Routes[0].FilterOverrides = map[string]*state.FilterOverride{state.FilterRBAC: {Disabled: true}}
	// Route /b: its virtual host's override (deny) wins over the route
	// configuration's.
	vh.FilterOverrides = map[string]*state.FilterOverride{state.FilterRBAC: {RBAC: denyAll}}
	vh.Routes[1].FilterOverrides = nil
	e := newProxyEnv(t, h, h1Cluster("wa", wa.hostport()), h1Cluster("wb", wb.hostport()), h1Cluster("be", be.hostport()))

	const n = 40
	denied := 0
	for range n {
		resp, _ := e.get(t, "/a")
		switch resp.StatusCode {
		case 200:
		case 403:
			denied++
		default:
			t.Fatalf("/a: %d", resp.StatusCode)
		}
	}
	if got := len(wb.seen()); got != 0 {
		t.Fatalf("entry wb's deny override let %d requests through", got)
	}
	if got := len(wa.seen()); got+denied != n || got == 0 || denied == 0 {
		t.Fatalf("wa served %d, %d denied, want all %d split between them", got, denied, n)
	}
	if resp, _ := e.get(t, "/b"); resp.StatusCode != 403 {
		t.Errorf("/b: %d, want 403 from the virtual host's override", resp.StatusCode)
	}

	// Without the virtual host's override the route configuration's
	// applies: /b passes; without either, the listener's deny stands.
	for _, rcOverride := range []bool{true, false} {
		h := filterHCM(&state.HTTPFilter{Name: state.FilterRBAC, RBAC: denyAll})
		if rcOverride {
			h.RouteConfig.FilterOverrides = map[string]*state.FilterOverride{state.FilterRBAC: {Disabled: true}}
		}
		e := newProxyEnv(t, h, h1Cluster("be", be.hostport()))
		want := 403
		if rcOverride {
			want = 200
		}
		if resp, _ := e.get(t, "/b"); resp.StatusCode != want {
			t.Errorf("route configuration override %v: /b %d, want %d", rcOverride, resp.StatusCode, want)
		}
	}
}
