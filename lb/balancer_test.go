package lb

import (
	"errors"
	"sync"
	"testing"

	"github.com/meshlet/meshlet/state"
)

var allPolicies = []state.LBPolicy{state.LBRoundRobin, state.LBLeastRequest, state.LBRandom, state.LBRingHash, state.LBMaglev}

func TestHostIdentityAcrossUpdate(t *testing.T) {
	eps := hosts("10.0.0.1", 3, state.HealthHealthy)
	b := newBalancer(&state.Cluster{}, assignment(locality("a", 0, 1, eps)))
	kept := hostByAddr(t, b, eps[1].addr)
	kept.Acquire()
	kept.Acquire()
	gone := hostByAddr(t, b, eps[2].addr)

	next := []ep{eps[0], {eps[1].addr, 5, state.HealthDegraded}, {"10.0.0.9:1", 1, state.HealthHealthy}}
	removed := b.Update(nil, assignment(locality("z", 2, 1, next)))

	if len(removed) != 1 || removed[0] != gone {
		t.Fatalf("removed = %v, want [%s]", removed, gone.Address)
	}
	h := hostByAddr(t, b, eps[1].addr)
	if h != kept {
		t.Fatal("surviving address got a new *Host")
	}
	if h.Active() != 2 {
		t.Errorf("Active() = %d after update, want 2", h.Active())
	}
	if h.Weight != 5 || h.Health != state.HealthDegraded || h.Priority != 2 || h.Locality.Zone != "z" {
		t.Errorf("fields not updated: %+v", h)
	}
	if len(b.Hosts()) != 3 {
		t.Errorf("Hosts() has %d hosts, want 3", len(b.Hosts()))
	}
}

func TestUpdateClusterChangesPolicy(t *testing.T) {
	eps := []ep{{"10.0.0.1:1", 1, 0}, {"10.0.0.1:2", 1, 0}}
	cla := assignment(locality("a", 0, 1, eps))
	b := newBalancer(&state.Cluster{LBPolicy: state.LBRoundRobin}, cla)
	b.Update(&state.Cluster{LBPolicy: state.LBRingHash}, cla)
	first, _ := b.Pick(&PickInfo{Hash: 42, HasHash: true})
	for range 20 {
		if h, _ := b.Pick(&PickInfo{Hash: 42, HasHash: true}); h != first {
			t.Fatal("after switching to RING_HASH, the same hash picked different hosts")
		}
	}
}

func TestExclude(t *testing.T) {
	eps := hosts("10.0.0.1", 4, state.HealthHealthy)
	for _, policy := range allPolicies {
		t.Run(policy.String(), func(t *testing.T) {
			b := newBalancer(&state.Cluster{LBPolicy: policy}, assignment(locality("a", 0, 1, eps)))
			avoided := 0
			for i := range 1000 {
				info := &PickInfo{Hash: uint64(i) * 0x9e3779b97f4a7c15, HasHash: true}
				natural, _ := b.Pick(info)
				info.Exclude = func(h *Host) bool { return h == natural }
				h, err := b.Pick(info)
				if err != nil {
					t.Fatal(err)
				}
				if h != natural {
					avoided++
				}
			}
			// Four picks in all; each retry lands elsewhere with probability
			// about 3/4, so nearly every request avoids the excluded host.
			if avoided < 970 {
				t.Errorf("avoided the excluded host in %d of 1000 picks", avoided)
			}
		})
	}
	t.Run("everything excluded returns the last pick", func(t *testing.T) {
		b := newBalancer(&state.Cluster{}, assignment(locality("a", 0, 1, eps)))
		calls := 0
		h, err := b.Pick(&PickInfo{Exclude: func(*Host) bool { calls++; return true }})
		if err != nil || h == nil {
			t.Fatalf("Pick = %v, %v; want a host", h, err)
		}
		if calls != 1+maxExtraPicks {
			t.Errorf("Exclude called %d times, want %d", calls, 1+maxExtraPicks)
		}
	})
}

// TestPickConcurrentWithUpdate is meant for -race: pickers never read Host
// fields that Update rewrites.
func TestPickConcurrentWithUpdate(t *testing.T) {
	for _, policy := range allPolicies {
		t.Run(policy.String(), func(t *testing.T) {
			// Small tables: this test is about concurrency, and -race makes
			// building a default 65537-entry maglev table 20x slower.
			b := New(&state.Cluster{LBPolicy: policy, LocalityWeighted: true, MaglevTableSize: 1009, MinRingSize: 64})
			var wg sync.WaitGroup
			stop := make(chan struct{})
			for g := range 4 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						h, err := b.Pick(&PickInfo{Hash: uint64(i*7 + g), HasHash: i%2 == 0})
						if err != nil && !errors.Is(err, ErrNoHealthyUpstream) {
							t.Error(err)
							return
						}
						if h != nil {
							h.Acquire()
							h.Release()
						}
					}
				}()
			}
			for i := range 200 {
				health := []state.HealthStatus{state.HealthHealthy, state.HealthUnhealthy, state.HealthDegraded, state.HealthDraining}[i%4]
				b.Update(nil, assignment(
					locality("a", 0, uint32(1+i%3), []ep{{"10.0.0.1:1", uint32(1 + i%5), health}, {"10.0.0.1:2", 2, state.HealthHealthy}}),
					locality("b", uint32(i%2), 2, []ep{{"10.0.0.2:1", uint32(1 + i%7), state.HealthHealthy}}),
				))
			}
			close(stop)
			wg.Wait()
		})
	}
}

func TestPickDoesNotAllocate(t *testing.T) {
	weighted := []ep{{"10.0.0.1:1", 1, 0}, {"10.0.0.1:2", 2, 0}, {"10.0.0.1:7", 7, 0}}
	equal := hosts("10.0.0.2", 3, state.HealthHealthy)
	for _, policy := range allPolicies {
		for name, eps := range map[string][]ep{"weighted": weighted, "equal": equal} {
			t.Run(policy.String()+"/"+name, func(t *testing.T) {
				b := newBalancer(&state.Cluster{LBPolicy: policy, LocalityWeighted: true},
					assignment(locality("a", 0, 1, eps), locality("b", 1, 1, equal)))
				exclude := func(*Host) bool { return false }
				pick := func() {
					info := PickInfo{Hash: 12345, HasHash: true, Exclude: exclude}
					_, _ = b.Pick(&info)
				}
				if n := testing.AllocsPerRun(1000, pick); n != 0 {
					t.Errorf("Pick allocates %.1f times", n)
				}
			})
		}
	}
}
