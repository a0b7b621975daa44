package upstream

import (
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestBreakerThresholds(t *testing.T) {
	for _, tc := range []struct {
		name string
		cb   *state.CircuitBreakers
		r    Resource
		// hold units are taken first; then one more is tried.
		hold int
		ok   bool
	}{
		{"default requests below", nil, ResourceRequests, 1023, true},
		{"default requests at 1024", nil, ResourceRequests, 1024, false},
		{"default retries 3", nil, ResourceRetries, 3, false},
		{"max_requests 2", &state.CircuitBreakers{MaxRequests: 2}, ResourceRequests, 2, false},
		{"max_requests 0 admits nothing", &state.CircuitBreakers{}, ResourceRequests, 0, false},
		{"max_pending 1", &state.CircuitBreakers{MaxPendingRequests: 1}, ResourcePendingRequests, 1, false},
		{"max_connections 5 below", &state.CircuitBreakers{MaxConnections: 5}, ResourceConnections, 4, true},
		{"pools unlimited by default", nil, ResourceConnectionPools, 5000, true},
		{"pools limited", &state.CircuitBreakers{MaxConnectionPools: 2}, ResourceConnectionPools, 2, false},
		{"retry budget floor", &state.CircuitBreakers{MaxRequests: 100, RetryBudget: &state.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 2}}, ResourceRetries, 2, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(&state.Cluster{Name: "c", CircuitBreakers: tc.cb}, nilLogger())
			var rels []func()
			for i := range tc.hold {
				rel, ok := c.Acquire(tc.r)
				if !ok {
					t.Fatalf("unit %d refused", i)
				}
				rels = append(rels, rel)
			}
			last, ok := c.Acquire(tc.r)
			rels = append(rels, last)
			if ok != tc.ok {
				t.Fatalf("Acquire after %d = %v, want %v", tc.hold, ok, tc.ok)
			}
			st := c.Stats().Breaker
			if !tc.ok && st.Overflow[tc.r.String()] != 1 {
				t.Fatalf("overflow not counted: %+v", st)
			}
			for _, rel := range rels {
				rel()
			}
			if st := c.Stats().Breaker; st.Open[tc.r.String()] != 0 {
				t.Fatalf("open after release = %d", st.Open[tc.r.String()])
			}
		})
	}
}

// TestRetryBudgetScales: the budget grows with active requests.
func TestRetryBudgetScales(t *testing.T) {
	c := newCluster(&state.Cluster{Name: "c", CircuitBreakers: &state.CircuitBreakers{
		MaxRequests: 1000, MaxPendingRequests: 1000,
		RetryBudget: &state.RetryBudget{BudgetPercent: 10, MinRetryConcurrency: 1},
	}}, nilLogger())
	for range 50 {
		c.Acquire(ResourceRequests)
	}
	n := 0
	for {
		if _, ok := c.Acquire(ResourceRetries); !ok {
			break
		}
		n++
	}
	if n != 5 {
		t.Fatalf("retries admitted with 50 active at 10%% = %d, want 5", n)
	}
}

func TestAcquireAllocatesNothing(t *testing.T) {
	c := newCluster(&state.Cluster{Name: "c"}, nilLogger())
	if a := testing.AllocsPerRun(100, func() {
		rel, _ := c.Acquire(ResourceRequests)
		rel()
	}); a != 0 {
		t.Fatalf("Acquire allocates %v", a)
	}
}
