package dns

import "strings"

// candidate is one node-mode service a name may resolve to: one per
// namespace that defines the hostname.
type candidate struct {
	namespace string
	canonical bool
	// nets are the VIPs grouped by network, in the order the networks
	// first appear. Empty for a Kubernetes headless service, which is
	// still a candidate: when picked, the query is forwarded (the cluster
	// DNS answers with the pods' addresses).
	nets []netAnswer
}

type netAnswer struct {
	network string
	answer
}

// noAddrs answers a service picked for a client that has no VIP on the
// client's network: NODATA, as ztunnel answers, never a VIP the client
// would have to reach outside the mesh.
var noAddrs = &answer{}

// buildAmbient indexes the node-mode services by every name form of their
// hostname; t.mu is held (or t is not yet shared). The candidates of a
// name keep the order of t.ambient (namespace/hostname order).
func (t *Table) buildAmbient() (exact, wild map[string][]*candidate) {
	exact, wild = map[string][]*candidate{}, map[string][]*candidate{}
	for _, s := range t.ambient {
		host := canonical(s.Hostname)
		if host == "" {
			continue
		}
		c := &candidate{namespace: canonical(s.Namespace), canonical: s.Canonical}
		for _, vip := range s.VIPs {
			i := 0
			for i < len(c.nets) && c.nets[i].network != vip.Network {
				i++
			}
			if i == len(c.nets) {
				c.nets = append(c.nets, netAnswer{network: vip.Network})
			}
			c.nets[i].add(vip.Addr)
		}
		usable := false
		for _, n := range c.nets {
			usable = usable || len(n.v4)+len(n.v6) > 0
		}
		svc, ns, kube := kubeParts(host, t.cfg.Domain)
		if !usable {
			if !kube {
				// No VIP and not a Kubernetes service: nothing to
				// answer or shadow; the name goes upstream.
				continue
			}
			c.nets = nil
		}
		if suffix, ok := strings.CutPrefix(host, "*."); ok {
			wild[suffix] = append(wild[suffix], c)
			continue
		}
		for _, n := range nameForms(host, svc, ns) {
			exact[n] = append(exact[n], c)
		}
	}
	return exact, wild
}

// pick chooses the service among cs that answers the client who, as
// ztunnel does: the client's namespace, else a canonical service, else the
// proxy's namespace, else the first; and returns its VIPs on the client's
// network (noAddrs when it has none there). nil means the picked service
// is headless: not answered from the table.
func (ix *index) pick(cs []*candidate, who *asker) *answer {
	network, clientNS := ix.network, ""
	c, known := who.get()
	if known {
		network, clientNS = c.Network, canonical(c.Namespace)
	}
	best, rank := cs[0], 0
	for _, c := range cs {
		if known && c.namespace == clientNS {
			best = c
			break
		}
		r := 1
		if c.canonical {
			r = 3
		} else if c.namespace == ix.namespace {
			r = 2
		}
		if r > rank {
			best, rank = c, r
		}
	}
	if best.nets == nil {
		return nil
	}
	for i := range best.nets {
		if best.nets[i].network == network {
			return &best.nets[i].answer
		}
	}
	return noAddrs
}
