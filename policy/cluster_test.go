package policy

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestPickWeightedBoundaries(t *testing.T) {
	ws := []state.WeightedCluster{{Name: "a", Weight: 1}, {Name: "zero", Weight: 0}, {Name: "b", Weight: 2}, {Name: "c", Weight: 3}}
	const total = 6
	// Envoy: rnd % total picks the interval [begin, begin+weight).
	want := map[uint64]string{0: "a", 1: "b", 2: "b", 3: "c", 4: "c", 5: "c", 6: "a", 7: "b", math.MaxUint64: "c"} // (2^64-1) % 6 == 3
	for rnd, name := range want {
		if got := PickWeighted(ws, total, rnd); got == nil || got.Name != name {
			t.Errorf("rnd %d: got %v, want %s", rnd, got, name)
		}
	}
	if got := PickWeighted(ws, 0, 5); got != nil {
		t.Errorf("total 0: got %v, want nil", got)
	}
	if got := PickWeighted(nil, 5, 5); got != nil {
		t.Errorf("no clusters: got %v, want nil", got)
	}
	// Inconsistent total larger than the weights: still pick a weighted entry.
	if got := PickWeighted(ws, 100, 50); got == nil || got.Weight == 0 {
		t.Errorf("oversized total: got %v, want an entry with weight", got)
	}
	// The returned pointer is into ws, so the proxy sees its Headers.
	if got := PickWeighted(ws, total, 0); got != &ws[0] {
		t.Error("PickWeighted did not return a pointer into ws")
	}
}

func TestPickWeightedDistribution(t *testing.T) {
	ws := []state.WeightedCluster{{Name: "a", Weight: 10}, {Name: "b", Weight: 30}, {Name: "c", Weight: 60}, {Name: "z", Weight: 0}}
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 100000
	counts := map[string]int{}
	for range n {
		counts[PickWeighted(ws, 100, rng.Uint64()).Name]++
	}
	for _, w := range ws {
		got := float64(counts[w.Name]) / n
		want := float64(w.Weight) / 100
		if math.Abs(got-want) > 0.01 {
			t.Errorf("cluster %s: share %.3f, want %.2f±0.01", w.Name, got, want)
		}
	}
}

func TestPickCluster(t *testing.T) {
	weighted := &state.RouteAction{WeightedClusters: []state.WeightedCluster{{Name: "a", Weight: 1}, {Name: "b", Weight: 1}}, TotalWeight: 2}
	noTotal := &state.RouteAction{WeightedClusters: []state.WeightedCluster{{Name: "a", Weight: 1}, {Name: "b", Weight: 3}}}
	tests := []struct {
		name   string
		a      *state.RouteAction
		r      *req
		rnd    uint64
		want   string
		wantWC bool
	}{
		{"cluster", &state.RouteAction{Cluster: "c1"}, get("h", "/"), 0, "c1", false},
		{"weighted 0", weighted, get("h", "/"), 0, "a", true},
		{"weighted 1", weighted, get("h", "/"), 1, "b", true},
		{"weighted computes total", noTotal, get("h", "/"), 2, "b", true},
		{"header", &state.RouteAction{ClusterHeader: "x-cluster"}, get("h", "/", "x-cluster", "c9"), 0, "c9", false},
		{"header missing", &state.RouteAction{ClusterHeader: "x-cluster"}, get("h", "/"), 0, "", false},
		{"nil action", nil, get("h", "/"), 0, "", false},
		{"all zero weights", &state.RouteAction{WeightedClusters: []state.WeightedCluster{{Name: "a"}}}, get("h", "/"), 0, "", false},
	}
	for _, tt := range tests {
		got, wc := PickCluster(tt.a, tt.r, tt.rnd)
		if got != tt.want || (wc != nil) != tt.wantWC {
			t.Errorf("%s: got %q, wc %v; want %q, wc set %v", tt.name, got, wc, tt.want, tt.wantWC)
		}
		if wc != nil && wc.Name != got {
			t.Errorf("%s: wc.Name %q != cluster %q", tt.name, wc.Name, got)
		}
	}
}
