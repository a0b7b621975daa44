package policy

import (
	"testing"

	"github.com/meshlet/meshlet/state"
)

func mut(key string) state.HeaderMutation {
	return state.HeaderMutation{RequestAdd: []state.HeaderValueOption{{Key: "x-level", Value: key, Action: state.OverwriteIfExistsOrAdd}}}
}

// applyRequest applies mutations the way the proxy must: in the returned
// order, removes before adds within one level.
func applyRequest(h map[string][]string, ms []*state.HeaderMutation) {
	for _, m := range ms {
		for _, k := range m.RequestRemove {
			delete(h, k)
		}
		for _, o := range m.RequestAdd {
			switch o.Action {
			case state.AppendIfExistsOrAdd:
				h[o.Key] = append(h[o.Key], o.Value)
			case state.OverwriteIfExistsOrAdd:
				h[o.Key] = []string{o.Value}
			}
		}
	}
}

func TestMutationsOrder(t *testing.T) {
	rc := &state.RouteConfig{Headers: mut("rc")}
	vh := &state.VirtualHost{Headers: mut("vh")}
	rt := &state.Route{Headers: mut("route")}
	wc := &state.WeightedCluster{Headers: mut("wc")}

	got := Mutations(rc, vh, rt, wc)
	want := []*state.HeaderMutation{&wc.Headers, &rt.Headers, &vh.Headers, &rc.Headers}
	if len(got) != len(want) {
		t.Fatalf("got %d mutations, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("mutation %d is %v, want %v", i, got[i].RequestAdd, want[i].RequestAdd)
		}
	}

	// Envoy default (most_specific_header_mutations_wins=false): with
	// overwrite the route configuration level has the last word, and with
	// append the values come most specific first.
	h := map[string][]string{}
	applyRequest(h, got)
	if v := h["x-level"]; len(v) != 1 || v[0] != "rc" {
		t.Errorf("overwrite result %v, want [rc]", v)
	}
	for _, m := range []*state.HeaderMutation{&rc.Headers, &vh.Headers, &rt.Headers, &wc.Headers} {
		m.RequestAdd[0].Action = state.AppendIfExistsOrAdd
	}
	h = map[string][]string{}
	applyRequest(h, Mutations(rc, vh, rt, wc))
	if v := h["x-level"]; len(v) != 4 || v[0] != "wc" || v[1] != "route" || v[2] != "vh" || v[3] != "rc" {
		t.Errorf("append result %v, want [wc route vh rc]", v)
	}
}

func TestMutationsSkipsEmptyAndNil(t *testing.T) {
	rc := &state.RouteConfig{Headers: mut("rc")}
	vh := &state.VirtualHost{}
	rt := &state.Route{Headers: state.HeaderMutation{ResponseRemove: []string{"server"}}}
	got := Mutations(rc, vh, rt, nil)
	if len(got) != 2 || got[0] != &rt.Headers || got[1] != &rc.Headers {
		t.Errorf("got %v, want [route rc]", got)
	}
	if got := Mutations(nil, nil, nil, nil); got != nil {
		t.Errorf("all nil: got %v, want nil", got)
	}
	if got := Mutations(&state.RouteConfig{}, vh, &state.Route{}, &state.WeightedCluster{}); got != nil {
		t.Errorf("all empty: got %v, want nil", got)
	}
}

func TestAppendMutationsNoAlloc(t *testing.T) {
	rc := &state.RouteConfig{Headers: mut("rc")}
	vh := &state.VirtualHost{Headers: mut("vh")}
	rt := &state.Route{Headers: mut("route")}
	var buf [4]*state.HeaderMutation
	allocs := testing.AllocsPerRun(100, func() {
		if len(AppendMutations(buf[:0], rc, vh, rt, nil)) != 3 {
			t.Fatal("wrong count")
		}
	})
	if allocs != 0 {
		t.Errorf("AppendMutations allocates %.1f per call, want 0", allocs)
	}
}
