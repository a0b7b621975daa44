package lb

import (
	"sync/atomic"
)

// maxScheduleLen caps a weighted round-robin schedule (4 bytes an entry).
// Weights whose reduced sum exceeds it are scaled down to fit, which keeps
// every host at least once per cycle at a small cost in precision.
const maxScheduleLen = 1 << 14

// rrPicker is ROUND_ROBIN. Equal weights give strict rotation. Unequal
// weights use a precomputed smooth schedule in which host i appears w[i]
// times spread through the cycle, so Pick is one atomic add and never waits
// on a lock.
type rrPicker struct {
	hosts    []*Host
	schedule []uint32 // nil: equal weights
	next     atomic.Uint64
}

func newRRPicker(hosts []*Host, weights []uint64) *rrPicker {
	p := &rrPicker{hosts: hosts}
	n := len(hosts)
	if !allEqual(weights) {
		p.schedule = smoothSchedule(weights)
		n = len(p.schedule)
	}
	// Start at a random point so that frequent endpoint updates (each
	// rebuilds the picker) do not keep sending the first request to the
	// first host.
	p.next.Store(uint64(randN(n)))
	return p
}

func (p *rrPicker) pick(uint64, uint32) *Host {
	i := p.next.Add(1)
	if p.schedule == nil {
		return p.hosts[i%uint64(len(p.hosts))]
	}
	return p.hosts[p.schedule[i%uint64(len(p.schedule))]]
}

func allEqual(w []uint64) bool {
	for _, x := range w[1:] {
		if x != w[0] {
			return false
		}
	}
	return true
}

// smoothSchedule orders picks by earliest deadline first where host i's k-th
// turn is due at (k-1/2)/w[i] (Sainte-Laguë): the result has host i exactly
// w[i] times (after reducing by the gcd and capping the length) with heavy
// hosts interleaved among light ones rather than bunched. Deadlines compare
// as exact fractions, so ties break by host order and the cycle is exact.
func smoothSchedule(weights []uint64) []uint32 {
	w := reduceWeights(weights, maxScheduleLen)
	var total uint64
	for _, x := range w {
		total += x
	}
	type turn struct {
		num, den uint64 // deadline (2k-1)/(2w)
		idx      uint32
	}
	less := func(a, b turn) bool {
		l, r := a.num*b.den, b.num*a.den
		if l != r {
			return l < r
		}
		return a.idx < b.idx
	}
	heap := make([]turn, len(w))
	for i, x := range w {
		heap[i] = turn{num: 1, den: 2 * x, idx: uint32(i)}
	}
	down := func(i int) {
		for {
			c := 2*i + 1
			if c >= len(heap) {
				return
			}
			if c+1 < len(heap) && less(heap[c+1], heap[c]) {
				c++
			}
			if !less(heap[c], heap[i]) {
				return
			}
			heap[i], heap[c] = heap[c], heap[i]
			i = c
		}
	}
	for i := len(heap)/2 - 1; i >= 0; i-- {
		down(i)
	}
	out := make([]uint32, 0, total)
	for range total {
		t := heap[0]
		out = append(out, t.idx)
		t.num += 2
		heap[0] = t
		down(0)
	}
	return out
}

// reduceWeights divides weights by their gcd and, if their sum still
// exceeds limit, scales them to fit (each stays at least 1).
func reduceWeights(weights []uint64, limit uint64) []uint64 {
	g := uint64(0)
	for _, x := range weights {
		g = gcd(g, x)
	}
	if g == 0 {
		g = 1
	}
	w := make([]uint64, len(weights))
	var total uint64
	for i, x := range weights {
		w[i] = max(1, x/g)
		total += w[i]
	}
	if total > limit {
		for i := range w {
			w[i] = max(1, uint64(float64(w[i])*float64(limit)/float64(total)+0.5))
		}
	}
	return w
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
