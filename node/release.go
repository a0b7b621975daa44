package node

import (
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/state"
)

// Forgetter is an Identities that can drop an identity's certificate
// (Cache is one). A Proxy whose Identities is a Forgetter releases the
// certificate of an identity as soon as no workload of this node uses it
// any more, so a node does not keep renewing certificates for pods that
// left; a pod coming back gets a freshly issued one.
type Forgetter interface {
	Forget(id identity.ID)
}

// watchIdentities registers the release on the store's updates. Updates
// are delivered synchronously under the store's lock, in order.
func (p *Proxy) watchIdentities() {
	f, ok := p.Identities.(Forgetter)
	if !ok || p.KeepIdentities {
		return
	}
	p.Store.Watch(func(old, next *state.Snapshot) {
		if old == nil || next == nil {
			return
		}
		p.mu.Lock()
		closed := p.closed
		p.mu.Unlock()
		if closed {
			return
		}
		gone := p.localIdentities(old.Ambient)
		if len(gone) == 0 {
			return
		}
		for id := range p.localIdentities(next.Ambient) {
			delete(gone, id)
		}
		for s := range gone {
			if id, err := parseWorkloadID(s); err == nil {
				f.Forget(id)
			}
		}
	})
}

// localIdentities are the SPIFFE IDs of the workloads of this node in amb.
func (p *Proxy) localIdentities(amb *state.Ambient) map[string]struct{} {
	if amb == nil {
		return nil
	}
	out := map[string]struct{}{}
	for _, w := range amb.Workloads {
		if p.NodeName == "" || w.Node == p.NodeName {
			out[w.Identity()] = struct{}{}
		}
	}
	return out
}
