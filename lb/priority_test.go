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
			got := computeLoad(tt.levels, tt.factor, defaultPanicThreshold)
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

func TestComputeLoadPanicThreshold(t *testing.T) {
	lv := func(n, healthy int) levelStats {
		return levelStats{totalWeight: uint64(n), healthyWeight: uint64(healthy), count: n, healthyCount: healthy}
	}
	tests := []struct {
		name      string
		levels    []levelStats
		threshold float64
		healthy   []uint32
		panic     []bool
	}{
		{"0: 10% healthy is no panic", []levelStats{lv(10, 1)}, 0, []uint32{100}, []bool{false}},
		{"0: nothing healthy gives level 0 the load without panic", []levelStats{lv(3, 0), lv(2, 0)}, 0, []uint32{100, 0}, []bool{false, false}},
		{"0: empty level is not in panic", []levelStats{lv(4, 1), lv(0, 0)}, 0, []uint32{100, 0}, []bool{false, false}},
		{"50: empty level is in panic", []levelStats{lv(4, 1), lv(0, 0)}, 50, []uint32{100, 0}, []bool{true, true}},
		{"25: 30% healthy is no panic", []levelStats{lv(10, 3)}, 25, []uint32{100}, []bool{false}},
		{"25: 20% healthy panics", []levelStats{lv(10, 2)}, 25, []uint32{100}, []bool{true}},
		{"100: 70% healthy panics when short", []levelStats{lv(10, 7)}, 100, []uint32{100}, []bool{true}},
		{"100: full availability never panics", []levelStats{lv(10, 8)}, 100, []uint32{100}, []bool{false}},
		{"37.5: exactly at the threshold is no panic", []levelStats{lv(8, 3)}, 37.5, []uint32{100}, []bool{false}},
		{"37.6: just below panics", []levelStats{lv(8, 3)}, 37.6, []uint32{100}, []bool{true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := computeLoad(tt.levels, 140, tt.threshold)
			if !slices.Equal(got.healthy, tt.healthy) || !slices.Equal(got.panic, tt.panic) {
				t.Errorf("got healthy %v panic %v; want %v %v", got.healthy, got.panic, tt.healthy, tt.panic)
			}
		})
	}
}

func TestPanicThreshold(t *testing.T) {
	pct := func(v float64) *float64 { return &v }
	up4, down6 := hosts("10.0.0.1", 4, state.HealthHealthy), hosts("10.0.0.2", 6, state.HealthUnhealthy)
	up2, down8 := hosts("10.0.0.3", 2, state.HealthHealthy), hosts("10.0.0.4", 8, state.HealthUnhealthy)
	up7, down3 := hosts("10.0.0.5", 7, state.HealthHealthy), hosts("10.0.0.6", 3, state.HealthUnhealthy)
	up3, down5 := hosts("10.0.0.7", 3, state.HealthHealthy), hosts("10.0.0.8", 5, state.HealthUnhealthy)
	deg4 := hosts("10.0.0.9", 4, state.HealthDegraded)
	p1 := hosts("10.0.1.1", 2, state.HealthHealthy)
	one := func(eps ...[]ep) *state.ClusterLoadAssignment { return assignment(locality("a", 0, 1, eps...)) }
	tests := []struct {
		name      string
		threshold *float64 // nil: the default
		cla       *state.ClusterLoadAssignment
		want      map[string]float64 // nil: no healthy upstream
	}{
		{"default 50, 40% healthy: panic", nil, one(up4, down6), even(1, up4, down6)},
		{"50, 40% healthy: panic", pct(50), one(up4, down6), even(1, up4, down6)},
		{"0, 40% healthy: healthy only", pct(0), one(up4, down6), even(1, up4)},
		{"0, 20% healthy: healthy only", pct(0), one(up2, down8), even(1, up2)},
		{"0, nothing healthy: no upstream", pct(0), one(down6), nil},
		{"0, P0 down fails over to P1", pct(0), assignment(locality("a", 0, 1, down6), locality("b", 1, 1, p1)), even(1, p1)},
		{"0, P0 and P1 down: no upstream", pct(0), assignment(locality("a", 0, 1, down6), locality("b", 1, 1, down3)), nil},
		{"0, degraded still serves", pct(0), one(deg4, down6), even(1, deg4)},
		{"50, nothing healthy: all hosts", pct(50), one(down6), even(1, down6)},
		{"25, 40% healthy: healthy only", pct(25), one(up4, down6), even(1, up4)},
		{"25, 20% healthy: panic", pct(25), one(up2, down8), even(1, up2, down8)},
		{"37.5, 3 of 8 healthy: healthy only", pct(37.5), one(up3, down5), even(1, up3)},
		{"100, 70% healthy: panic", pct(100), one(up7, down3), even(1, up7, down3)},
		{"50, 70% healthy: healthy only", pct(50), one(up7, down3), even(1, up7)},
		{"100, 90% healthy has full availability: no panic", pct(100), one(hosts("10.0.2.1", 9, state.HealthHealthy), hosts("10.0.2.2", 1, state.HealthUnhealthy)),
			even(1, hosts("10.0.2.1", 9, 0))},
	}
	for _, tt := range tests {
		for _, policy := range []state.LBPolicy{state.LBRoundRobin, state.LBRingHash} {
			t.Run(tt.name+"/"+policy.String(), func(t *testing.T) {
				b := newBalancer(&state.Cluster{Name: "c", LBPolicy: policy, HealthyPanicThreshold: tt.threshold}, tt.cla)
				info := func(i int) *PickInfo { return &PickInfo{Hash: uint64(i) * 0x9e3779b97f4a7c15, HasHash: true} }
				if tt.want == nil {
					h, err := b.Pick(info(1))
					if !errors.Is(err, ErrNoHealthyUpstream) || h != nil {
						t.Fatalf("Pick = %v, %v; want ErrNoHealthyUpstream", h, err)
					}
					return
				}
				// A ring's arcs are uneven; what matters here is which
				// hosts take traffic at all.
				tol := 0.03
				if policy == state.LBRingHash {
					tol = 0.08
				}
				checkShares(t, sharesOf(t, b, 40000, info), tt.want, tol)
			})
		}
	}
}
