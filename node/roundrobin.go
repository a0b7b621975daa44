package node

import (
	"sync"
	"sync/atomic"
)

// roundRobin keeps one counter per service so that each service's
// endpoints are taken in turn when their capacities are equal (the shares
// ztunnel's weighted draw gives, without its streaks). Counters are never removed: a node sees a bounded
// set of services and a counter is 8 bytes.
type roundRobin struct {
	m sync.Map // service key -> *atomic.Uint64
}

func (r *roundRobin) next(key string, n int) int {
	v, ok := r.m.Load(key)
	if !ok {
		v, _ = r.m.LoadOrStore(key, new(atomic.Uint64))
	}
	return int((v.(*atomic.Uint64).Add(1) - 1) % uint64(n))
}
