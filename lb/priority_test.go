package lb

import (
	"errors"
	"slices"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestComputeLoad(t *testing.T) {
	// lv builds a level of n hosts of weight 1 with the given healthy and
	// degraded counts.
	lv := func(n, healthy, degraded int) levelStats {
		return levelStats{
			totalWeight: uint64(n), healthyWeight: uint64(healthy), degradedWeight: uint64(degraded),
			count: n, healthyCount: healthy, degradedCount: degraded,
		}
	}
	tests := []struct {
		name         string
		levels       []levelStats
		factor       uint32
		healthy, deg []uint32
		panic        []bool
	}{
		{"one healthy level", []levelStats{lv(3, 3, 0)}, 140, []uint32{100}, []uint32{0}, []bool{false}},
		{"P0 healthy keeps all", []levelStats{lv(4, 4, 0), lv(4, 4, 0)}, 140, []uint32{100, 0}, []uint32{0, 0}, []bool{false, false}},
		{"P0 half healthy spills 30%", []levelStats{lv(10, 5, 0), lv(2, 2, 0)}, 140, []uint32{70, 30}, []uint32{0, 0}, []bool{false, false}},
		{"P0 72% healthy is enough with 1.4", []levelStats{lv(100, 72, 0), lv(2, 2, 0)}, 140, []uint32{100, 0}, []uint32{0, 0}, []bool{false, false}},
		{"factor 100 spills more", []levelStats{lv(10, 5, 0), lv(2, 2, 0)}, 100, []uint32{50, 50}, []uint32{0, 0}, []bool{false, false}},
		{"P0 down fails over", []levelStats{lv(3, 0, 0), lv(2, 2, 0)}, 140, []uint32{0, 100}, []uint32{0, 0}, []bool{false, false}},
		{"degraded takes what healthy cannot", []levelStats{lv(4, 2, 2)}, 140, []uint32{70}, []uint32{30}, []bool{false}},
		{"enough healthy: degraded idle", []levelStats{lv(10, 8, 2)}, 140, []uint32{100}, []uint32{0}, []bool{false}},
		// Envoy's own example (load_balancer_impl.cc): health 10/20/10 and
		// degraded 20/10/0 give 16/28/14 healthy and 28/14/0 degraded.
		{"envoy example", []levelStats{lv(10, 1, 2), lv(10, 2, 1), lv(10, 1, 0)}, 100,
			[]uint32{16, 28, 14}, []uint32{28, 14, 0}, []bool{true, true, true}},
		{"short of capacity, level above threshold", []levelStats{lv(10, 6, 0)}, 140, []uint32{100}, []uint32{0}, []bool{false}},
		{"short of capacity, level below threshold", []levelStats{lv(10, 4, 0)}, 140, []uint32{100}, []uint32{0}, []bool{true}},
		{"total panic by host count", []levelStats{lv(3, 0, 0), lv(1, 0, 0)}, 140, []uint32{75, 25}, []uint32{0, 0}, []bool{true, true}},
		{"total panic rounding to first", []levelStats{lv(1, 0, 0), lv(1, 0, 0), lv(1, 0, 0)}, 140, []uint32{34, 33, 33}, []uint32{0, 0, 0}, []bool{true, true, true}},
		{"weights count for health", []levelStats{
			{totalWeight: 10, healthyWeight: 9, count: 2, healthyCount: 1}, lv(1, 1, 0)}, 140,
			[]uint32{100, 0}, []uint32{0, 0}, []bool{false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := computeLoad(tt.levels, tt.factor)
			if !slices.Equal(got.healthy, tt.healthy) || !slices.Equal(got.degraded, tt.deg) || !slices.Equal(got.panic, tt.panic) {
				t.Errorf("got healthy %v degraded %v panic %v; want %v %v %v",
					got.healthy, got.degraded, got.panic, tt.healthy, tt.deg, tt.panic)
			}
			var sum uint32
			for i := range got.healthy {
				sum += got.healthy[i] + got.degraded[i]
			}
			if sum != 100 {
				t.Errorf("loads sum to %d, want 100", sum)
			}
		})
	}
}

func TestPriorityFailover(t *testing.T) {
	p0healthy := hosts("10.0.0.1", 5, state.HealthHealthy)
	p0down := hosts("10.0.0.2", 5, state.HealthUnhealthy)
	p1 := hosts("10.0.1.1", 2, state.HealthHealthy)
	for _, policy := range []state.LBPolicy{state.LBRoundRobin, state.LBLeastRequest, state.LBRandom, state.LBRingHash, state.LBMaglev} {
		t.Run(policy.String(), func(t *testing.T) {
			c := &state.Cluster{Name: "c", LBPolicy: policy}
			t.Run("P0 down", func(t *testing.T) {
				b := newBalancer(c, assignment(locality("a", 0, 1, p0down), locality("b", 1, 1, p1)))
				checkShares(t, sharesOf(t, b, 20000, nil), even(1, p1), 0.03)
			})
			t.Run("P0 half healthy gets 70%", func(t *testing.T) {
				b := newBalancer(c, assignment(locality("a", 0, 1, p0healthy, p0down), locality("b", 1, 1, p1)))
				checkShares(t, sharesOf(t, b, 100000, nil), merge(even(0.7, p0healthy), even(0.3, p1)), 0.02)
			})
			t.Run("P0 back", func(t *testing.T) {
				b := newBalancer(c, assignment(locality("a", 0, 1, p0down), locality("b", 1, 1, p1)))
				b.Update(nil, assignment(locality("a", 0, 1, p0healthy), locality("b", 1, 1, p1)))
				checkShares(t, sharesOf(t, b, 20000, nil), even(1, p0healthy), 0.03)
			})
		})
	}
}

func TestPanicMode(t *testing.T) {
	c := &state.Cluster{Name: "c"}
	tests := []struct {
		name string
		cla  *state.ClusterLoadAssignment
		want map[string]float64
	}{
		{
			// 40% healthy < 50% threshold: all ten hosts share traffic.
			"below threshold uses all hosts",
			assignment(locality("a", 0, 1, hosts("10.0.0.1", 4, state.HealthHealthy), hosts("10.0.0.2", 6, state.HealthUnhealthy))),
			merge(even(1, hosts("10.0.0.1", 4, 0), hosts("10.0.0.2", 6, 0))),
		},
		{
			"at threshold stays on healthy",
			assignment(locality("a", 0, 1, hosts("10.0.0.1", 5, state.HealthHealthy), hosts("10.0.0.2", 5, state.HealthUnhealthy))),
			even(1, hosts("10.0.0.1", 5, 0)),
		},
		{
			"nothing healthy anywhere: all hosts by count",
			assignment(
				locality("a", 0, 1, hosts("10.0.0.1", 3, state.HealthUnhealthy)),
				locality("b", 1, 1, hosts("10.0.1.1", 1, state.HealthTimeout))),
			merge(even(0.75, hosts("10.0.0.1", 3, 0)), even(0.25, hosts("10.0.1.1", 1, 0))),
		},
		{
			"draining never takes traffic, even in panic",
			assignment(locality("a", 0, 1, hosts("10.0.0.1", 2, state.HealthUnhealthy), hosts("10.0.0.2", 2, state.HealthDraining))),
			even(1, hosts("10.0.0.1", 2, 0)),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBalancer(c, tt.cla)
			checkShares(t, sharesOf(t, b, 100000, nil), tt.want, 0.015)
		})
	}
}

func TestNoHealthyUpstream(t *testing.T) {
	tests := []struct {
		name string
		cla  *state.ClusterLoadAssignment
	}{
		{"nil assignment", nil},
		{"no endpoints", assignment()},
		{"all draining", assignment(locality("a", 0, 1, hosts("10.0.0.1", 3, state.HealthDraining)))},
		{"unresolved DNS", &state.ClusterLoadAssignment{Localities: []state.LocalityEndpoints{{Endpoints: []state.Endpoint{{Hostname: "x"}}}}}},
	}
	for _, tt := range tests {
		for _, policy := range []state.LBPolicy{state.LBRoundRobin, state.LBLeastRequest, state.LBRandom, state.LBRingHash, state.LBMaglev} {
			t.Run(tt.name+"/"+policy.String(), func(t *testing.T) {
				b := newBalancer(&state.Cluster{LBPolicy: policy}, tt.cla)
				h, err := b.Pick(&PickInfo{Hash: 7, HasHash: true})
				if !errors.Is(err, ErrNoHealthyUpstream) || h != nil {
					t.Fatalf("Pick = %v, %v; want ErrNoHealthyUpstream", h, err)
				}
			})
		}
	}
}

func TestDegraded(t *testing.T) {
	healthy2 := hosts("10.0.0.1", 2, state.HealthHealthy)
	degraded2 := hosts("10.0.0.2", 2, state.HealthDegraded)
	healthy8 := hosts("10.0.0.3", 8, state.HealthHealthy)
	tests := []struct {
		name string
		cla  *state.ClusterLoadAssignment
		want map[string]float64
	}{
		{"not enough healthy: degraded take the rest",
			assignment(locality("a", 0, 1, healthy2, degraded2)),
			merge(even(0.7, healthy2), even(0.3, degraded2))},
		{"enough healthy: degraded idle",
			assignment(locality("a", 0, 1, healthy8, degraded2)),
			even(1, healthy8)},
		{"only degraded",
			assignment(locality("a", 0, 1, degraded2)),
			even(1, degraded2)},
		{"healthy lower priority beats degraded higher priority",
			assignment(locality("a", 0, 1, degraded2), locality("b", 1, 1, healthy2)),
			even(1, healthy2)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := newBalancer(&state.Cluster{}, tt.cla)
			checkShares(t, sharesOf(t, b, 100000, nil), tt.want, 0.015)
		})
	}
}

func TestLocalityWeighted(t *testing.T) {
	a := hosts("10.1.0.1", 2, state.HealthHealthy)
	bb := hosts("10.2.0.1", 2, state.HealthHealthy)
	bHalf := append(hosts("10.2.0.1", 1, state.HealthHealthy), ep{"10.2.0.9:1", 1, state.HealthUnhealthy}, ep{"10.2.0.9:2", 1, state.HealthUnhealthy}, ep{"10.2.0.9:3", 1, state.HealthUnhealthy})
	z := hosts("10.3.0.1", 2, state.HealthHealthy)
	tests := []struct {
		name     string
		weighted bool
		cla      *state.ClusterLoadAssignment
		want     map[string]float64
	}{
		{"weights 1:3", true,
			assignment(locality("a", 0, 1, a), locality("b", 0, 3, bb)),
			merge(even(0.25, a), even(0.75, bb))},
		{"off: flat over hosts", false,
			assignment(locality("a", 0, 1, a), locality("b", 0, 3, bb)),
			merge(even(1, a, bb))},
		{"weight 0 locality gets nothing", true,
			assignment(locality("a", 0, 1, a), locality("z", 0, 0, z)),
			even(1, a)},
		// Locality b: 1 of 4 healthy, effective 3*min(1, 1.4*0.25) = 1.05.
		{"partial locality health scales its weight", true,
			assignment(locality("a", 0, 1, a), locality("b", 0, 3, bHalf)),
			merge(even(1/2.05, a), map[string]float64{"10.2.0.1:8000": 1.05 / 2.05})},
	}
	for _, policy := range []state.LBPolicy{state.LBRoundRobin, state.LBLeastRequest, state.LBRandom} {
		for _, tt := range tests {
			t.Run(policy.String()+"/"+tt.name, func(t *testing.T) {
				b := newBalancer(&state.Cluster{LBPolicy: policy, LocalityWeighted: tt.weighted}, tt.cla)
				checkShares(t, sharesOf(t, b, 100000, nil), tt.want, 0.015)
			})
		}
	}
	// Hashing policies fold locality weights into host weights.
	for _, policy := range []state.LBPolicy{state.LBRingHash, state.LBMaglev} {
		t.Run(policy.String()+"/weights 1:3", func(t *testing.T) {
			b := newBalancer(&state.Cluster{LBPolicy: policy, LocalityWeighted: true},
				assignment(locality("a", 0, 1, a), locality("b", 0, 3, bb)))
			checkShares(t, sharesOf(t, b, 100000, nil), merge(even(0.25, a), even(0.75, bb)), 0.03)
		})
	}
}
