package lb

// localityPicker is locality weighted LB for the non-hashing policies: pick
// a locality with probability proportional to its effective weight, then let
// that locality's own policy picker choose the host. Envoy uses an EDF
// schedule over localities; weighted random gives the same shares without
// shared mutable state on the hot path.
type localityPicker struct {
	cum   []float64 // running sums of effective weights
	local []hostPicker
}

func (p *localityPicker) pick(h uint64, attempt uint32) *Host {
	x := randFloat64() * p.cum[len(p.cum)-1]
	lo, hi := 0, len(p.cum)-1
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if p.cum[m] > x {
			hi = m
		} else {
			lo = m + 1
		}
	}
	return p.local[lo].pick(h, attempt)
}

// effectiveLocalityWeight is Envoy's HostSetImpl::effectiveLocalityWeight:
// the configured weight scaled by the share of the locality's hosts that are
// eligible, boosted by the overprovisioning factor and capped at 1, so a
// locality losing hosts sheds load gradually.
func effectiveLocalityWeight(weight uint32, eligible, hosts int, factor uint32) float64 {
	if hosts == 0 || eligible == 0 {
		return 0
	}
	avail := min(1.0, float64(factor)/100*float64(eligible)/float64(hosts))
	return float64(weight) * avail
}
