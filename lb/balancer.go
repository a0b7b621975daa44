package lb

import (
	"sync"
	"sync/atomic"

	"github.com/meshlet/meshlet/state"
)

// Picker picks a host for one request. Implementations are immutable and
// safe for concurrent use; Pick never blocks.
type Picker interface {
	Pick(info *PickInfo) (*Host, error)
}

// Balancer holds a cluster's hosts and its current Picker.
type Balancer struct {
	mu    sync.Mutex // serializes Update
	spec  *state.Cluster
	hosts map[string]*Host
	cla   *state.ClusterLoadAssignment // last Update's, for Rebuild
	list  []*Host                      // last Update's hosts, in order
	// newHCFailed: hosts created by Update start failed by active health
	// checking until their first check passes, as in Envoy.
	newHCFailed bool
	picker      atomic.Pointer[pickerBox]
}

type pickerBox struct {
	// p is concrete, not a Picker: calling through an interface would make
	// every caller's *PickInfo escape to the heap, one allocation per
	// request. nil means no host can take traffic.
	p     *clusterPicker
	hosts []*Host
}

// New returns a Balancer for cluster c with no hosts.
func New(c *state.Cluster) *Balancer {
	b := &Balancer{spec: c, hosts: map[string]*Host{}}
	b.picker.Store(&pickerBox{})
	return b
}

// Pick picks a host using the current picker.
func (b *Balancer) Pick(info *PickInfo) (*Host, error) {
	p := b.picker.Load().p
	if p == nil {
		return nil, ErrNoHealthyUpstream
	}
	return p.Pick(info)
}

// Hosts returns the hosts of the current picker (all of them, healthy or
// not). The slice must not be modified.
func (b *Balancer) Hosts() []*Host { return b.picker.Load().hosts }

// Update replaces the endpoint set (and, when c is non-nil, the cluster spec)
// and publishes a new picker. Hosts whose address is unchanged keep their
// *Host. It returns the hosts that were removed, so callers can close pools.
func (b *Balancer) Update(c *state.Cluster, cla *state.ClusterLoadAssignment) (removed []*Host) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if c != nil {
		b.spec = c
	}
	next := make(map[string]*Host, len(b.hosts))
	var hosts []*Host
	if cla != nil {
		for _, loc := range cla.Localities {
			for _, ep := range loc.Endpoints {
				if ep.Address == "" {
					continue // unresolved DNS endpoint
				}
				h := next[ep.Address]
				if h != nil {
					continue // duplicate address: first wins
				}
				h = b.hosts[ep.Address]
				if h == nil {
					h = &Host{Address: ep.Address}
					if b.newHCFailed {
						h.flags.Store(flagHCFailed)
					}
				}
				// A surviving host keeps its *Host so its active counter
				// carries over. Its fields are rewritten in place, and only
				// when they change: pickers never read them after build, but
				// callers holding the host from an earlier Pick may.
				setHostFields(h, max(ep.Weight, 1), loc.Locality, loc.Priority, ep.Health, ep.Hostname)
				next[ep.Address] = h
				hosts = append(hosts, h)
			}
		}
	}
	for addr, h := range b.hosts {
		if next[addr] == nil {
			removed = append(removed, h)
		}
	}
	b.hosts = next
	b.cla, b.list = cla, hosts
	b.picker.Store(&pickerBox{p: build(b.spec, cla, hosts), hosts: hosts})
	return removed
}

// SetNewHostsHealthCheckFailed makes hosts added by later Updates start
// marked failed by active health checking (while the cluster has a health
// check), so they take traffic only once a check passed.
func (b *Balancer) SetNewHostsHealthCheckFailed(v bool) {
	b.mu.Lock()
	b.newHCFailed = v
	b.mu.Unlock()
}

// Rebuild publishes a new picker over the same hosts, picking up changed
// ejection and health-check flags (Host.SetEjected,
// Host.SetHealthCheckFailed). Pickers in use stay valid.
func (b *Balancer) Rebuild() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.picker.Store(&pickerBox{p: build(b.spec, b.cla, b.list), hosts: b.list})
}

func setHostFields(h *Host, w uint32, loc state.Locality, prio uint32, hs state.HealthStatus, hostname string) {
	if h.Hostname != hostname {
		h.Hostname = hostname
	}
	if h.Weight != w {
		h.Weight = w
	}
	if h.Locality != loc {
		h.Locality = loc
	}
	if h.Priority != prio {
		h.Priority = prio
	}
	if h.Health != hs {
		h.Health = hs
	}
}
