package lb

// randomPicker is RANDOM, honouring endpoint weights: a host's chance is its
// weight over the total. (Envoy's RANDOM ignores weights; weighted is what a
// mesh user setting weights expects.)
type randomPicker struct {
	hosts []*Host
	cum   []uint64 // nil: equal weights; else running sums of weights
}

func newRandomPicker(hosts []*Host, weights []uint64) *randomPicker {
	p := &randomPicker{hosts: hosts}
	if !allEqual(weights) {
		p.cum = make([]uint64, len(weights))
		var s uint64
		for i, w := range weights {
			s += w
			p.cum[i] = s
		}
	}
	return p
}

// pick draws a fresh random number rather than using h, so a retry after
// Exclude can land elsewhere.
func (p *randomPicker) pick(uint64, uint32) *Host {
	if p.cum == nil {
		return p.hosts[randN(len(p.hosts))]
	}
	return p.hosts[searchCum(p.cum, randUint64N(p.cum[len(p.cum)-1]))]
}

// searchCum returns the first i with cum[i] > x.
func searchCum(cum []uint64, x uint64) int {
	lo, hi := 0, len(cum)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if cum[m] > x {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return lo
}
