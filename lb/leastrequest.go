package lb

import (
	"math"
	"sync"
)

// newLeastRequestPicker builds LEAST_REQUEST the way Envoy does: with equal
// weights, power of choice_count random choices (P2C by default) by active
// requests; with unequal weights, earliest deadline first where a host's
// weight is weight / (active+1)^bias, re-evaluated each time it is picked.
func newLeastRequestPicker(hosts []*Host, weights []uint64, choices uint32, bias float64) hostPicker {
	if allEqual(weights) {
		return &p2cPicker{hosts: hosts, choices: max(choices, 2)}
	}
	p := &lrEDFPicker{hosts: hosts, weights: make([]float64, len(hosts)), bias: bias}
	p.heap = make([]edfEntry, len(hosts))
	for i, w := range weights {
		p.weights[i] = float64(w)
		p.heap[i] = edfEntry{deadline: 1 / p.effective(i), seq: uint64(i), idx: uint32(i)}
	}
	p.seq = uint64(len(hosts))
	for i := len(p.heap)/2 - 1; i >= 0; i-- {
		p.down(i)
	}
	return p
}

type p2cPicker struct {
	hosts   []*Host
	choices uint32
}

// pick samples with replacement, as Envoy does: with two hosts there is a
// quarter chance of comparing a host with itself, which keeps some traffic
// on a loaded host instead of starving it completely.
func (p *p2cPicker) pick(uint64, uint32) *Host {
	n := len(p.hosts)
	best := p.hosts[randN(n)]
	for range p.choices - 1 {
		if c := p.hosts[randN(n)]; c.Active() < best.Active() {
			best = c
		}
	}
	return best
}

// lrEDFPicker holds mutable scheduling state; the mutex guards a heap update
// of O(log n) and nothing else, so Pick never waits on I/O.
type lrEDFPicker struct {
	hosts   []*Host
	weights []float64
	bias    float64

	mu   sync.Mutex
	now  float64
	seq  uint64
	heap []edfEntry
}

type edfEntry struct {
	deadline float64
	seq      uint64 // FIFO among equal deadlines
	idx      uint32
}

func (p *lrEDFPicker) effective(i int) float64 {
	w := p.weights[i]
	a := float64(max(0, p.hosts[i].Active()))
	switch p.bias {
	case 0:
		return w
	case 1:
		return w / (a + 1)
	}
	return w / math.Pow(a+1, p.bias)
}

func (p *lrEDFPicker) pick(uint64, uint32) *Host {
	p.mu.Lock()
	e := p.heap[0]
	p.now = e.deadline
	e.deadline = p.now + 1/p.effective(int(e.idx))
	e.seq = p.seq
	p.seq++
	p.heap[0] = e
	p.down(0)
	p.mu.Unlock()
	return p.hosts[e.idx]
}

func (p *lrEDFPicker) less(a, b int) bool {
	x, y := &p.heap[a], &p.heap[b]
	if x.deadline != y.deadline {
		return x.deadline < y.deadline
	}
	return x.seq < y.seq
}

func (p *lrEDFPicker) down(i int) {
	for {
		c := 2*i + 1
		if c >= len(p.heap) {
			return
		}
		if c+1 < len(p.heap) && p.less(c+1, c) {
			c++
		}
		if !p.less(c, i) {
			return
		}
		p.heap[i], p.heap[c] = p.heap[c], p.heap[i]
		i = c
	}
}
