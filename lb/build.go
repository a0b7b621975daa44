package lb

import (
	"sync/atomic"

	"github.com/meshlet/meshlet/state"
)

// build makes the picker for a cluster's hosts. Placeholder: round robin over
// usable hosts, ignoring weights, priorities and the policy. The lb owner
// replaces this with the real per-policy pickers.
func build(c *state.Cluster, cla *state.ClusterLoadAssignment, hosts []*Host) Picker {
	var usable []*Host
	for _, h := range hosts {
		if h.Health.Usable() {
			usable = append(usable, h)
		}
	}
	if len(usable) == 0 {
		return emptyPicker{}
	}
	return &simpleRR{hosts: usable}
}

type simpleRR struct {
	hosts []*Host
	next  atomic.Uint64
}

func (p *simpleRR) Pick(*PickInfo) (*Host, error) {
	n := p.next.Add(1)
	return p.hosts[n%uint64(len(p.hosts))], nil
}
