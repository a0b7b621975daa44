package lb

// Priority levels follow Envoy's "priority levels" and "panic threshold"
// architecture docs and LoadBalancerBase::recalculatePerPriorityState: each
// level gets a health percentage scaled by the overprovisioning factor, load
// goes to the highest levels first, and what they cannot take spills down.

const (
	// defaultOverprovisioningFactor is ClusterLoadAssignment.Policy's
	// default, in percent.
	defaultOverprovisioningFactor = 140
	// defaultPanicThreshold is CommonLbConfig.healthy_panic_threshold's
	// default, in percent.
	defaultPanicThreshold = 50
)

// levelStats is what the load calculation needs to know about one priority
// level. DRAINING hosts are excluded before these are counted (Envoy treats
// EDS DRAINING as excluded from load balancing).
type levelStats struct {
	// Weights: priority health follows the brief and Envoy's
	// weighted_priority_health, so a heavy healthy host counts for more.
	totalWeight, healthyWeight, degradedWeight uint64
	// Counts: panic detection uses host counts, as Envoy always does.
	count, healthyCount, degradedCount int
}

// priorityLoad is the outcome: per level, the percentage of traffic sent to
// its healthy hosts and to its degraded hosts (summing to 100 over all
// levels), and whether the level is in panic (balance over all its hosts).
type priorityLoad struct {
	healthy  []uint32
	degraded []uint32
	panic    []bool
}

// computeLoad distributes 100% of traffic over the levels. factor is the
// overprovisioning factor in percent; threshold is the healthy panic
// threshold in percent (0: panic mode is off).
func computeLoad(levels []levelStats, factor uint32, threshold float64) priorityLoad {
	n := len(levels)
	pl := priorityLoad{
		healthy:  make([]uint32, n),
		degraded: make([]uint32, n),
		panic:    make([]bool, n),
	}
	if n == 0 {
		return pl
	}
	health := make([]uint32, n)
	degraded := make([]uint32, n)
	for i, l := range levels {
		if l.totalWeight == 0 {
			continue
		}
		health[i] = uint32(min(100, uint64(factor)*l.healthyWeight/l.totalWeight))
		degraded[i] = uint32(min(100, uint64(factor)*l.degradedWeight/l.totalWeight))
	}
	var sum uint32
	for i := range n {
		sum += health[i] + degraded[i]
	}
	total := min(100, sum) // "normalized total availability"

	if total == 0 {
		if threshold <= 0 {
			// Panic mode is off and nothing can take traffic: like Envoy,
			// give level 0 the whole load without panic, so its (empty)
			// healthy set answers "no healthy upstream".
			pl.healthy[0] = 100
			return pl
		}
		// Nothing is healthy or degraded anywhere: total panic. Load follows
		// host counts and every level balances over all of its hosts.
		totalPanic(levels, &pl)
		return pl
	}

	firstHealthy, rest := distribute(pl.healthy, health, 100, total)
	firstDegraded, rest := distribute(pl.degraded, degraded, rest, total)
	if rest != 0 {
		// Rounding leftovers go to the first level that can take them.
		if firstHealthy >= 0 {
			pl.healthy[firstHealthy] += rest
		} else {
			pl.degraded[firstDegraded] += rest
		}
	}
	// A level panics only when the levels together are short of capacity;
	// with 100% normalized availability traffic simply spills over.
	if total < 100 {
		for i, l := range levels {
			pl.panic[i] = inPanic(l, threshold)
		}
	}
	return pl
}

// distribute assigns load to levels in priority order, each taking its
// availability share until the load runs out. It returns the first level
// with non-zero availability (-1 if none) and the undistributed remainder.
func distribute(load, avail []uint32, total, normTotal uint32) (first int, rest uint32) {
	first = -1
	for i, a := range avail {
		if first < 0 && a > 0 {
			first = i
		}
		load[i] = min(total, a*100/normTotal)
		total -= load[i]
	}
	return first, total
}

// inPanic follows Envoy's isHostSetInPanic: the share of usable hosts by
// count (an empty level has none) below the threshold. With threshold 0
// no level is ever in panic.
func inPanic(l levelStats, threshold float64) bool {
	var usable float64
	if l.count > 0 {
		usable = 100 * float64(l.healthyCount+l.degradedCount) / float64(l.count)
	}
	return usable < threshold
}

func totalPanic(levels []levelStats, pl *priorityLoad) {
	hosts := 0
	for _, l := range levels {
		hosts += l.count
	}
	for i := range levels {
		pl.panic[i] = true
	}
	if hosts == 0 {
		pl.healthy[0] = 100
		return
	}
	rest := uint32(100)
	first := -1
	for i, l := range levels {
		if first < 0 && l.count > 0 {
			first = i
		}
		pl.healthy[i] = uint32(100 * l.count / hosts)
		rest -= pl.healthy[i]
	}
	pl.healthy[first] += rest
}

// choose maps h to a level: h%100 falls into the cumulative healthy loads,
// then the degraded ones. The bool reports a degraded pick.
func (pl *priorityLoad) choose(h uint64) (int, bool) {
	x := uint32(h%100) + 1
	var acc uint32
	for i, l := range pl.healthy {
		acc += l
		if x <= acc {
			return i, false
		}
	}
	for i, l := range pl.degraded {
		acc += l
		if x <= acc {
			return i, true
		}
	}
	return 0, false
}
