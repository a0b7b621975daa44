package lb

import (
	"cmp"
	"slices"

	"github.com/meshlet/meshlet/state"
)

// healthClass selects which hosts of a level a picker serves.
type healthClass int

const (
	classHealthy healthClass = iota
	classDegraded
	classAll // panic mode
)

// locGroup is one locality within one priority level.
type locGroup struct {
	weight uint32
	hosts  [3][]*Host // by healthClass
}

// levelHosts is one priority level's hosts, DRAINING ones already dropped.
type levelHosts struct {
	priority uint32
	locs     []*locGroup
	hosts    [3][]*Host // by healthClass
}

// policyConfig is the cluster's LB settings with defaults applied.
type policyConfig struct {
	policy           state.LBPolicy
	choices          uint32
	bias             float64
	minRing, maxRing uint64
	maglevSize       uint64
	localityWeighted bool
	factor           uint32
	// panicThreshold is healthy_panic_threshold in percent, capped at 100
	// as Envoy does; 0 turns panic mode off.
	panicThreshold float64
}

func resolveConfig(c *state.Cluster, cla *state.ClusterLoadAssignment) policyConfig {
	if c == nil {
		c = &state.Cluster{}
	}
	cfg := policyConfig{
		policy:           c.LBPolicy,
		choices:          c.ChoiceCount,
		bias:             c.ActiveRequestBias,
		minRing:          c.MinRingSize,
		maxRing:          c.MaxRingSize,
		maglevSize:       maglevTableSize(c.MaglevTableSize),
		localityWeighted: c.LocalityWeighted,
		factor:           defaultOverprovisioningFactor,
		panicThreshold:   defaultPanicThreshold,
	}
	if c.HealthyPanicThreshold != nil {
		cfg.panicThreshold = min(100, max(0, *c.HealthyPanicThreshold))
	}
	if cfg.choices == 0 {
		cfg.choices = 2
	}
	// The state model cannot tell an explicit 0.0 bias from unset; unset
	// (Envoy's default 1.0) is by far the common case.
	if cfg.bias <= 0 {
		cfg.bias = 1
	}
	if cfg.minRing == 0 {
		cfg.minRing = defaultMinRingSize
	}
	if cfg.maxRing == 0 {
		cfg.maxRing = defaultMaxRingSize
	}
	cfg.minRing = min(cfg.minRing, cfg.maxRing)
	if cla != nil && cla.OverprovisioningFactor > 0 {
		cfg.factor = cla.OverprovisioningFactor
	}
	return cfg
}

func (cfg *policyConfig) hashing() bool {
	return cfg.policy == state.LBRingHash || cfg.policy == state.LBMaglev
}

// build makes the picker for a cluster's hosts. It reads the hosts' mutable
// fields (weight, health, priority, locality) only here, under the
// Balancer's update lock; the pickers keep their own copies so that a Pick
// racing the next Update never reads a field being rewritten.
func build(c *state.Cluster, cla *state.ClusterLoadAssignment, hosts []*Host) *clusterPicker {
	cfg := resolveConfig(c, cla)
	// Health is read once per host: the ejection and active-check flags
	// change concurrently, and one build must see one answer per host.
	health := make(map[*Host]state.HealthStatus, len(hosts))
	for _, h := range hosts {
		health[h] = h.lbHealth()
	}
	levels := groupHosts(cla, hosts, health)
	if len(levels) == 0 {
		return nil
	}
	stats := make([]levelStats, len(levels))
	weights := map[*Host]uint64{}
	for i, lh := range levels {
		s := &stats[i]
		for _, h := range lh.hosts[classAll] {
			w := uint64(h.Weight)
			if w == 0 {
				w = 1
			}
			weights[h] = w
			s.totalWeight += w
			s.count++
			switch hs := health[h]; {
			case hs.Usable():
				s.healthyWeight += w
				s.healthyCount++
			case hs == state.HealthDegraded:
				s.degradedWeight += w
				s.degradedCount++
			}
		}
	}
	p := &clusterPicker{
		levels: make([]level, len(levels)),
		load:   computeLoad(stats, cfg.factor, cfg.panicThreshold),
		hashed: cfg.hashing(),
	}
	p.single = len(levels) == 1 && p.load.healthy[0] == 100
	for i, lh := range levels {
		l := &p.levels[i]
		l.panic = p.load.panic[i]
		// Build only the pickers this load can reach: a maglev table is
		// 256 KiB and a few milliseconds, not to be spent on idle classes.
		hl, dl := p.load.healthy[i], p.load.degraded[i]
		switch {
		case l.panic && hl+dl > 0:
			l.all = cfg.levelPicker(lh, classAll, weights)
		case !l.panic:
			if hl > 0 {
				l.healthy = cfg.levelPicker(lh, classHealthy, weights)
			}
			if dl > 0 {
				l.degraded = cfg.levelPicker(lh, classDegraded, weights)
			}
		}
	}
	return p
}

// groupHosts sorts hosts into priority levels and, within each, localities
// in the order the assignment lists them. DRAINING hosts are left out
// entirely, as Envoy excludes them from load balancing. health is each
// host's effective health (see Host.lbHealth).
func groupHosts(cla *state.ClusterLoadAssignment, hosts []*Host, health map[*Host]state.HealthStatus) []*levelHosts {
	type locKey struct {
		priority uint32
		loc      state.Locality
	}
	locWeight := map[locKey]uint32{}
	if cla != nil {
		for _, le := range cla.Localities {
			k := locKey{le.Priority, le.Locality}
			if _, ok := locWeight[k]; !ok {
				locWeight[k] = le.Weight
			}
		}
	}
	byPrio := map[uint32]*levelHosts{}
	byLoc := map[locKey]*locGroup{}
	var levels []*levelHosts
	for _, h := range hosts {
		if health[h] == state.HealthDraining {
			continue
		}
		lh := byPrio[h.Priority]
		if lh == nil {
			lh = &levelHosts{priority: h.Priority}
			byPrio[h.Priority] = lh
			levels = append(levels, lh)
		}
		k := locKey{h.Priority, h.Locality}
		g := byLoc[k]
		if g == nil {
			g = &locGroup{weight: locWeight[k]}
			byLoc[k] = g
			lh.locs = append(lh.locs, g)
		}
		cls := classOf(health[h])
		for _, dst := range []*[3][]*Host{&lh.hosts, &g.hosts} {
			dst[classAll] = append(dst[classAll], h)
			if cls != classAll {
				dst[cls] = append(dst[cls], h)
			}
		}
	}
	// Envoy numbers priorities densely from 0; a gap here is just an empty
	// level that takes no load, so sorting the present ones is equivalent.
	slices.SortFunc(levels, func(a, b *levelHosts) int { return cmp.Compare(a.priority, b.priority) })
	return levels
}

// classOf returns the class a host serves in outside panic, or classAll for
// hosts that serve only in panic (UNHEALTHY, TIMEOUT).
func classOf(hs state.HealthStatus) healthClass {
	switch {
	case hs.Usable():
		return classHealthy
	case hs == state.HealthDegraded:
		return classDegraded
	}
	return classAll
}

// levelPicker builds the picker for one class of one level, or nil if the
// class is empty.
func (cfg *policyConfig) levelPicker(lh *levelHosts, cls healthClass, weights map[*Host]uint64) hostPicker {
	hosts := lh.hosts[cls]
	if len(hosts) == 0 {
		return nil
	}
	if cfg.hashing() {
		return cfg.hashPicker(lh, cls, weights)
	}
	// Envoy skips locality selection in panic and balances over all hosts.
	if cfg.localityWeighted && cls != classAll {
		var lp localityPicker
		var sum float64
		for _, g := range lh.locs {
			ew := effectiveLocalityWeight(g.weight, len(g.hosts[cls]), len(g.hosts[classAll]), cfg.factor)
			if ew == 0 {
				continue
			}
			sum += ew
			lp.cum = append(lp.cum, sum)
			lp.local = append(lp.local, cfg.flatPicker(g.hosts[cls], weights))
		}
		if len(lp.local) > 0 {
			return &lp
		}
		// No locality has weight and eligible hosts: fall back to the
		// flattened level, as Envoy does when no locality can be chosen.
	}
	return cfg.flatPicker(hosts, weights)
}

func (cfg *policyConfig) flatPicker(hosts []*Host, weights map[*Host]uint64) hostPicker {
	w := make([]uint64, len(hosts))
	for i, h := range hosts {
		w[i] = weights[h]
	}
	switch cfg.policy {
	case state.LBLeastRequest:
		return newLeastRequestPicker(hosts, w, cfg.choices, cfg.bias)
	case state.LBRandom:
		return newRandomPicker(hosts, w)
	}
	return newRRPicker(hosts, w)
}

// hashPicker builds a ring or maglev table. With locality weighting, a
// host's share is its locality's share of the locality weights times its
// share within the locality (Envoy's normalizeLocalityWeights); localities
// of weight 0 get nothing.
func (cfg *policyConfig) hashPicker(lh *levelHosts, cls healthClass, weights map[*Host]uint64) hostPicker {
	var hosts []*Host
	var norm []float64
	var locSum uint64
	if cfg.localityWeighted {
		for _, g := range lh.locs {
			locSum += uint64(g.weight)
		}
	}
	if locSum > 0 {
		for _, g := range lh.locs {
			if g.weight == 0 || len(g.hosts[cls]) == 0 {
				continue
			}
			var sum uint64
			for _, h := range g.hosts[cls] {
				sum += weights[h]
			}
			share := float64(g.weight) / float64(locSum)
			for _, h := range g.hosts[cls] {
				hosts = append(hosts, h)
				norm = append(norm, share*float64(weights[h])/float64(sum))
			}
		}
	} else {
		hosts = lh.hosts[cls]
		var sum uint64
		for _, h := range hosts {
			sum += weights[h]
		}
		for _, h := range hosts {
			norm = append(norm, float64(weights[h])/float64(sum))
		}
	}
	if len(hosts) == 0 {
		return nil
	}
	if cfg.policy == state.LBMaglev {
		return newMaglevPicker(hosts, norm, cfg.maglevSize)
	}
	return newRingPicker(hosts, norm, cfg.minRing, cfg.maxRing)
}
