package lb

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// ep is a terse endpoint for tests: address, weight, health.
type ep struct {
	addr   string
	weight uint32
	health state.HealthStatus
}

func hosts(prefix string, n int, hs state.HealthStatus) []ep {
	out := make([]ep, n)
	for i := range out {
		out[i] = ep{addr: fmt.Sprintf("%s:%d", prefix, 8000+i), weight: 1, health: hs}
	}
	return out
}

func locality(zone string, prio, weight uint32, eps ...[]ep) state.LocalityEndpoints {
	le := state.LocalityEndpoints{Locality: state.Locality{Region: "r", Zone: zone}, Priority: prio, Weight: weight}
	for _, group := range eps {
		for _, e := range group {
			le.Endpoints = append(le.Endpoints, state.Endpoint{Address: e.addr, Weight: e.weight, Health: e.health})
		}
	}
	return le
}

func assignment(locs ...state.LocalityEndpoints) *state.ClusterLoadAssignment {
	return &state.ClusterLoadAssignment{ClusterName: "c", Localities: locs}
}

func newBalancer(c *state.Cluster, cla *state.ClusterLoadAssignment) *Balancer {
	b := New(c)
	b.Update(nil, cla)
	return b
}

// sharesOf picks n times and returns each address's share of the picks.
func sharesOf(t *testing.T, b *Balancer, n int, info func(i int) *PickInfo) map[string]float64 {
	t.Helper()
	counts := map[string]int{}
	for i := range n {
		var pi *PickInfo
		if info != nil {
			pi = info(i)
		}
		h, err := b.Pick(pi)
		if err != nil {
			t.Fatalf("pick %d: %v", i, err)
		}
		counts[h.Address]++
	}
	shares := map[string]float64{}
	for a, c := range counts {
		shares[a] = float64(c) / float64(n)
	}
	return shares
}

// checkShares compares observed shares with expected ones within an absolute
// tolerance; addresses missing from want must not appear at all.
func checkShares(t *testing.T, got, want map[string]float64, tol float64) {
	t.Helper()
	for a, g := range got {
		if _, ok := want[a]; !ok {
			t.Errorf("host %s got %.4f of picks, want none", a, g)
		}
	}
	keys := make([]string, 0, len(want))
	for a := range want {
		keys = append(keys, a)
	}
	slices.Sort(keys)
	for _, a := range keys {
		if g := got[a]; math.Abs(g-want[a]) > tol {
			t.Errorf("host %s share %.4f, want %.4f ± %.3f", a, g, want[a], tol)
		}
	}
}

// even returns equal expected shares (total) over the endpoints.
func even(total float64, groups ...[]ep) map[string]float64 {
	n := 0
	for _, g := range groups {
		n += len(g)
	}
	m := map[string]float64{}
	for _, g := range groups {
		for _, e := range g {
			m[e.addr] = total / float64(n)
		}
	}
	return m
}

func merge(ms ...map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}
