package lb

import (
	"slices"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestRoundRobinEqualWeightsStrictOrder(t *testing.T) {
	eps := hosts("10.0.0.1", 5, state.HealthHealthy)
	b := newBalancer(&state.Cluster{LBPolicy: state.LBRoundRobin}, assignment(locality("a", 0, 1, eps)))
	first, _ := b.Pick(nil)
	start := slices.IndexFunc(eps, func(e ep) bool { return e.addr == first.Address })
	for i := 1; i < 3*len(eps); i++ {
		h, err := b.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}
		if want := eps[(start+i)%len(eps)].addr; h.Address != want {
			t.Fatalf("pick %d = %s, want %s", i, h.Address, want)
		}
	}
}

func TestRoundRobinWeighted(t *testing.T) {
	tests := []struct {
		name    string
		weights []uint32
	}{
		{"1:2:7", []uint32{1, 2, 7}},
		{"gcd reduced 100:200:700", []uint32{100, 200, 700}},
		{"5:1:1", []uint32{5, 1, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var eps []ep
			var total uint32
			for i, w := range tt.weights {
				eps = append(eps, ep{addr: "10.0.0.1:" + string(rune('a'+i)), weight: w, health: state.HealthHealthy})
				total += w
			}
			b := newBalancer(&state.Cluster{}, assignment(locality("a", 0, 1, eps)))
			g := uint32(0)
			for _, w := range tt.weights {
				g = uint32(gcd(uint64(g), uint64(w)))
			}
			cycle := int(total / g)
			// Any window of one cycle holds each host exactly weight/gcd times.
			for range 3 {
				counts := map[string]int{}
				var seq []string
				for range cycle {
					h, _ := b.Pick(nil)
					counts[h.Address]++
					seq = append(seq, h.Address)
				}
				for i, e := range eps {
					if want := int(tt.weights[i] / g); counts[e.addr] != want {
						t.Fatalf("cycle %v: %s picked %d times, want %d", seq, e.addr, counts[e.addr], want)
					}
				}
			}
		})
	}
}

func TestSmoothScheduleInterleaves(t *testing.T) {
	s := smoothSchedule([]uint64{1, 2, 7})
	if len(s) != 10 {
		t.Fatalf("schedule length %d, want 10", len(s))
	}
	// The heavy host must not take its 7 turns back to back: the longest
	// run (cyclically) stays well below its weight.
	run, longest := 0, 0
	for i := range 2 * len(s) {
		if s[i%len(s)] == 2 {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	if longest > 4 {
		t.Errorf("schedule %v: heavy host runs %d in a row", s, longest)
	}
}

func TestReduceWeightsCapsLength(t *testing.T) {
	w := reduceWeights([]uint64{1, 1 << 31, 3 << 30}, maxScheduleLen)
	var total uint64
	for _, x := range w {
		if x == 0 {
			t.Fatalf("weight scaled to 0: %v", w)
		}
		total += x
	}
	if total > maxScheduleLen+uint64(len(w)) {
		t.Errorf("total %d exceeds cap %d", total, maxScheduleLen)
	}
	if r := float64(w[1]) / float64(w[2]); r < 0.66 || r > 0.67 {
		t.Errorf("ratio of large weights %.4f, want 2/3", r)
	}
}
