package dns

import (
	"slices"

	"github.com/meshlet/meshlet/state"
)

// HostsFromAmbient lists the node-mode services of the Workload API that
// have a hostname and at least one VIP, sorted by name; headless services
// (no VIP) are left to the upstream resolver, as ztunnel's DNS proxy does
// for names it cannot answer with a stable address.
func HostsFromAmbient(a *state.Ambient) []Host {
	if a == nil {
		return nil
	}
	var out []Host
	for _, s := range a.Services {
		if s.Hostname == "" || len(s.Addresses) == 0 {
			continue
		}
		h := Host{Name: s.Hostname, Service: s.Name, Namespace: s.Namespace}
		for _, na := range s.Addresses {
			if na.Addr.IsValid() && !slices.Contains(h.Addrs, na.Addr) {
				h.Addrs = append(h.Addrs, na.Addr)
			}
		}
		out = append(out, h)
	}
	slices.SortFunc(out, func(x, y Host) int {
		switch {
		case x.Name < y.Name:
			return -1
		case x.Name > y.Name:
			return 1
		}
		return 0
	})
	return out
}
