package upstream

import (
	"sync/atomic"

	"github.com/meshlet/meshlet/state"
)

// breaker is a cluster's circuit breaker: one gauge per resource, checked
// against the DEFAULT-priority thresholds of the current spec. Acquire is
// lock-free and allocates nothing: the release funcs are built once.
type breaker struct {
	spec     *atomic.Pointer[state.Cluster]
	open     [numResources]atomic.Int64
	overflow [numResources]atomic.Uint64
	release  [numResources]func()
}

func newBreaker(spec *atomic.Pointer[state.Cluster]) *breaker {
	b := &breaker{spec: spec}
	for r := range numResources {
		b.release[r] = func() { b.open[r].Add(-1) }
	}
	return b
}

func (b *breaker) thresholds() *state.CircuitBreakers {
	if cb := b.spec.Load().CircuitBreakers; cb != nil {
		return cb
	}
	return &state.DefaultCircuitBreakers
}

// limit returns the current threshold for r; 0 means unlimited.
func (b *breaker) limit(r Resource) int64 {
	cb := b.thresholds()
	switch r {
	case ResourceConnections:
		return int64(cb.MaxConnections)
	case ResourcePendingRequests:
		return int64(cb.MaxPendingRequests)
	case ResourceRequests:
		return int64(cb.MaxRequests)
	case ResourceRetries:
		if rb := cb.RetryBudget; rb != nil {
			// Envoy: retries may be budget_percent of the active plus pending
			// requests, but never fewer than min_retry_concurrency.
			active := b.open[ResourceRequests].Load() + b.open[ResourcePendingRequests].Load()
			return max(int64(float64(active)*rb.BudgetPercent/100), int64(rb.MinRetryConcurrency))
		}
		return int64(cb.MaxRetries)
	case ResourceConnectionPools:
		return int64(cb.MaxConnectionPools)
	}
	return 0
}

func (b *breaker) acquire(r Resource) (func(), bool) {
	if r < 0 || r >= numResources {
		return noop, true
	}
	lim := b.limit(r)
	// A threshold of 0 admits nothing, as in Envoy, except for connection
	// pools, where 0 stands for the unset (unlimited) default.
	unlimited := r == ResourceConnectionPools && lim == 0
	n := b.open[r].Add(1)
	if !unlimited && n > lim {
		b.open[r].Add(-1)
		b.overflow[r].Add(1)
		return noop, false
	}
	return b.release[r], true
}

// BreakerStats are a cluster's circuit-breaker gauges and overflow
// counters (Envoy's upstream_cx_overflow, upstream_rq_pending_overflow,
// upstream_rq_overflow, upstream_rq_retry_overflow,
// upstream_cx_pool_overflow).
type BreakerStats struct {
	Open     map[string]int64
	Overflow map[string]uint64
}

func (r Resource) String() string {
	switch r {
	case ResourceConnections:
		return "connections"
	case ResourcePendingRequests:
		return "pending_requests"
	case ResourceRequests:
		return "requests"
	case ResourceRetries:
		return "retries"
	case ResourceConnectionPools:
		return "connection_pools"
	}
	return "unknown"
}

func (b *breaker) snapshot() BreakerStats {
	st := BreakerStats{Open: map[string]int64{}, Overflow: map[string]uint64{}}
	for r := range numResources {
		st.Open[r.String()] = b.open[r].Load()
		st.Overflow[r.String()] = b.overflow[r].Load()
	}
	return st
}
