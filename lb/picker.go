package lb

// hostPicker picks from one fixed set of hosts: one priority level and one
// health class (healthy, degraded, or all hosts in panic). h is the request
// hash, or a random value when the request has none; attempt counts retries
// made because PickInfo.Exclude rejected the previous pick.
type hostPicker interface {
	pick(h uint64, attempt uint32) *Host
}

// maxExtraPicks bounds retries when PickInfo.Exclude rejects a host, like
// Envoy's host_selection_retry_max_attempts set to 3.
const maxExtraPicks = 3

// level is one priority level's pickers. A nil picker means the class is
// empty at this level.
type level struct {
	healthy, degraded, all hostPicker
	panic                  bool
}

// clusterPicker is the Picker the Balancer publishes: priority selection on
// top of per-level policy pickers. It is immutable after build.
type clusterPicker struct {
	levels []level
	load   priorityLoad
	// hashed: ring hash and maglev choose the level from the request hash,
	// so a given hash sticks to one level while health is stable.
	hashed bool
	// single: one level takes all traffic on its healthy hosts, the common
	// case, so Pick skips the priority choice.
	single bool
}

func (p *clusterPicker) Pick(info *PickInfo) (*Host, error) {
	var (
		h       uint64
		hasHash bool
		exclude func(*Host) bool
	)
	if info != nil {
		h, hasHash, exclude = info.Hash, info.HasHash, info.Exclude
	}
	if !hasHash {
		h = randUint64()
	}
	tries := uint32(1)
	if exclude != nil {
		tries += maxExtraPicks
	}
	var last *Host
	for attempt := range tries {
		if attempt > 0 && !p.hashed {
			h = randUint64()
		}
		host := p.pickOnce(h, attempt)
		if host == nil {
			break
		}
		last = host
		if exclude == nil || !exclude(host) {
			return host, nil
		}
	}
	if last == nil {
		return nil, ErrNoHealthyUpstream
	}
	return last, nil
}

func (p *clusterPicker) pickOnce(h uint64, attempt uint32) *Host {
	i, degraded := 0, false
	if !p.single {
		i, degraded = p.load.choose(h)
	}
	l := &p.levels[i]
	var hp hostPicker
	switch {
	case l.panic:
		hp = l.all
	case degraded:
		hp = l.degraded
	default:
		hp = l.healthy
	}
	if hp == nil {
		return nil
	}
	return hp.pick(h, attempt)
}
