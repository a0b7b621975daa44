package state

import (
	"net/netip"
	"sort"
)

// Ambient is the Workload API part of a Snapshot: workloads, services and
// authorization policies with the indexes the node proxy looks things up
// by. Like everything in a Snapshot it is immutable once built; an update
// builds a new one with With/Without.
type Ambient struct {
	// Workloads by UID (their xDS name).
	Workloads map[string]*Workload
	// Services by "namespace/hostname" (their xDS name).
	Services map[string]*Service
	// Policies by "namespace/name" (their xDS name).
	Policies map[string]*Authorization

	byAddr    map[NetworkAddr]*Workload
	byVIP     map[NetworkAddr]*Service
	byHost    map[string][]*Service
	endpoints map[string][]*Workload // service key -> workloads, sorted by UID
	global    []*Authorization
	byNS      map[string][]*Authorization
}

// NewAmbient indexes the given resources. The maps are owned by the result.
func NewAmbient(workloads map[string]*Workload, services map[string]*Service, policies map[string]*Authorization) *Ambient {
	if workloads == nil {
		workloads = map[string]*Workload{}
	}
	if services == nil {
		services = map[string]*Service{}
	}
	if policies == nil {
		policies = map[string]*Authorization{}
	}
	a := &Ambient{
		Workloads: workloads,
		Services:  services,
		Policies:  policies,
		byAddr:    map[NetworkAddr]*Workload{},
		byVIP:     map[NetworkAddr]*Service{},
		byHost:    map[string][]*Service{},
		endpoints: map[string][]*Workload{},
		byNS:      map[string][]*Authorization{},
	}
	// Sorted iteration keeps lookups deterministic when two resources
	// claim the same address (a stale one not yet removed).
	for _, uid := range sortedKeys(workloads) {
		w := workloads[uid]
		if !w.HostNetwork {
			for _, ip := range w.Addresses {
				k := NetworkAddr{w.Network, ip}
				if _, dup := a.byAddr[k]; !dup {
					a.byAddr[k] = w
				}
			}
		}
		for svc := range w.Services {
			a.endpoints[svc] = append(a.endpoints[svc], w)
		}
	}
	for _, key := range sortedKeys(services) {
		s := services[key]
		for _, vip := range s.Addresses {
			if _, dup := a.byVIP[vip]; !dup {
				a.byVIP[vip] = s
			}
		}
		a.byHost[s.Hostname] = append(a.byHost[s.Hostname], s)
	}
	for _, key := range sortedKeys(policies) {
		p := policies[key]
		switch p.Scope {
		case AuthzGlobal:
			a.global = append(a.global, p)
		case AuthzNamespace:
			a.byNS[p.Namespace] = append(a.byNS[p.Namespace], p)
		}
	}
	return a
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// AmbientDelta is one batch of Workload API changes.
type AmbientDelta struct {
	Workloads []*Workload
	Services  []*Service
	Policies  []*Authorization
	// RemovedAddresses are xDS names of the Address type: a workload UID
	// or a service "namespace/hostname".
	RemovedAddresses []string
	// RemovedPolicies are "namespace/name" keys.
	RemovedPolicies []string
}

// Apply returns a new index with d applied; a nil receiver is empty.
func (a *Ambient) Apply(d AmbientDelta) *Ambient {
	w, s, p := map[string]*Workload{}, map[string]*Service{}, map[string]*Authorization{}
	if a != nil {
		for k, v := range a.Workloads {
			w[k] = v
		}
		for k, v := range a.Services {
			s[k] = v
		}
		for k, v := range a.Policies {
			p[k] = v
		}
	}
	for _, name := range d.RemovedAddresses {
		delete(w, name)
		delete(s, name)
	}
	for _, name := range d.RemovedPolicies {
		delete(p, name)
	}
	for _, x := range d.Workloads {
		w[x.UID] = x
	}
	for _, x := range d.Services {
		s[x.Key()] = x
	}
	for _, x := range d.Policies {
		p[x.Key()] = x
	}
	return NewAmbient(w, s, p)
}

// Workload returns the workload with uid, or nil.
func (a *Ambient) Workload(uid string) *Workload {
	if a == nil {
		return nil
	}
	return a.Workloads[uid]
}

// WorkloadByAddr returns the workload at (network, ip), or nil.
func (a *Ambient) WorkloadByAddr(network string, ip netip.Addr) *Workload {
	if a == nil {
		return nil
	}
	return a.byAddr[NetworkAddr{network, ip.Unmap()}]
}

// ServiceByVIP returns the service with VIP (network, ip), or nil.
func (a *Ambient) ServiceByVIP(network string, ip netip.Addr) *Service {
	if a == nil {
		return nil
	}
	return a.byVIP[NetworkAddr{network, ip.Unmap()}]
}

// ServicesByHostname returns the services named host (one per namespace
// that defines it), ordered by key.
func (a *Ambient) ServicesByHostname(host string) []*Service {
	if a == nil {
		return nil
	}
	return a.byHost[host]
}

// Endpoints returns the workloads backing the service with key
// "namespace/hostname", ordered by UID.
func (a *Ambient) Endpoints(serviceKey string) []*Workload {
	if a == nil {
		return nil
	}
	return a.endpoints[serviceKey]
}

// PoliciesFor returns the policies that apply to w: global ones, those of
// w's namespace, and the selector policies w names. Missing names are
// skipped (the policy may not have arrived yet).
func (a *Ambient) PoliciesFor(w *Workload) []*Authorization {
	if a == nil {
		return nil
	}
	out := make([]*Authorization, 0, len(a.global)+len(a.byNS[w.Namespace])+len(w.AuthorizationPolicies))
	out = append(out, a.global...)
	out = append(out, a.byNS[w.Namespace]...)
	for _, name := range w.AuthorizationPolicies {
		if p := a.Policies[name]; p != nil {
			out = append(out, p)
		}
	}
	return out
}
