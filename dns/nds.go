package dns

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/meshlet/meshlet/dns/ndspb"
)

// TypeNameTable is the NDS type URL istiod serves to proxies whose node
// metadata sets DNS_CAPTURE.
const TypeNameTable = "type.googleapis.com/istio.networking.nds.v1.NameTable"

// HostsFromNameTable converts an NDS NameTable. Only hosts of the
// Kubernetes registry get the short name forms, as in Istio's agent;
// unparsable addresses are skipped.
func HostsFromNameTable(nt *ndspb.NameTable) []Host {
	if nt == nil {
		return nil
	}
	out := make([]Host, 0, len(nt.GetTable()))
	for name, info := range nt.GetTable() {
		h := Host{Name: name}
		for _, s := range info.GetIps() {
			if ip, err := netip.ParseAddr(s); err == nil {
				h.Addrs = append(h.Addrs, ip)
			}
		}
		if info.GetRegistry() == "Kubernetes" {
			h.Service, h.Namespace = info.GetShortname(), info.GetNamespace()
		} else {
			h.NotKubernetes = true
		}
		out = append(out, h)
		//lint:ignore SA1019 alt_hosts is deprecated in Istio but its agent still honours it.
		for _, alt := range info.GetAltHosts() {
			out = append(out, Host{Name: alt, Addrs: h.Addrs, NotKubernetes: true})
		}
	}
	slices.SortFunc(out, func(a, b Host) int { return strings.Compare(a.Name, b.Name) })
	return out
}
