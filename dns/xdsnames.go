package dns

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/meshlet/meshlet/state"
)

// HostsFromSnapshot derives mesh names from the xDS configuration when the
// control plane sends no NameTable:
//   - a listener bound to one specific address (a service VIP, as Istio's
//     per-service outbound listeners are) names the service host through
//     its tcp_proxy cluster ("outbound|PORT|SUBSET|HOST") or its routes'
//     virtual host domains;
//   - a virtual host whose domains list addresses besides names (Istio
//     adds the service's VIPs, "10.96.0.7" and "10.96.0.7:9080", to the
//     virtual hosts of its shared 0.0.0.0_PORT route) names those VIPs.
//
// Other wildcard listeners say nothing about any host's address.
func HostsFromSnapshot(snap *state.Snapshot) []Host {
	if snap == nil {
		return nil
	}
	byName := map[string][]netip.Addr{}
	add := func(host string, vip netip.Addr) {
		host = canonical(host)
		if host == "" || !strings.Contains(host, ".") || strings.ContainsAny(host, "*:[]") || isIPLiteral(host) {
			return
		}
		if !slices.Contains(byName[host], vip) {
			byName[host] = append(byName[host], vip)
		}
	}
	addVH := func(vh *state.VirtualHost, vip netip.Addr) {
		vips := vhostAddrs(vh)
		if vip.IsValid() && !slices.Contains(vips, vip) {
			vips = append(vips, vip)
		}
		for _, ip := range vips {
			for _, d := range vh.Domains {
				add(d, ip)
			}
		}
	}
	for _, rc := range snap.Routes {
		for _, vh := range rc.VirtualHosts {
			addVH(vh, netip.Addr{})
		}
	}
	for _, l := range snap.Listeners {
		vip := l.Address.Addr().Unmap()
		if !vip.IsValid() || vip.IsUnspecified() || vip.IsLoopback() {
			vip = netip.Addr{}
		}
		chains := l.FilterChains
		if l.DefaultFilterChain != nil {
			chains = append(slices.Clip(chains), l.DefaultFilterChain)
		}
		for _, fc := range chains {
			switch {
			case fc == nil:
			case fc.TCPProxy != nil:
				if !vip.IsValid() {
					continue
				}
				add(clusterHost(fc.TCPProxy.Cluster), vip)
				for _, w := range fc.TCPProxy.WeightedClusters {
					add(clusterHost(w.Name), vip)
				}
			case fc.HTTP != nil:
				rc := fc.HTTP.RouteConfig
				if rc == nil && vip.IsValid() {
					rc = snap.Routes[fc.HTTP.RDSName]
				}
				if rc == nil {
					continue
				}
				for _, vh := range rc.VirtualHosts {
					addVH(vh, vip)
				}
			}
		}
	}
	out := make([]Host, 0, len(byName))
	for name, addrs := range byName {
		out = append(out, Host{Name: name, Addrs: addrs})
	}
	slices.SortFunc(out, func(a, b Host) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// clusterHost returns HOST from Istio's "outbound|PORT|SUBSET|HOST" cluster
// names, "" for any other name.
func clusterHost(name string) string {
	parts := strings.Split(name, "|")
	if len(parts) != 4 || parts[0] != "outbound" {
		return ""
	}
	return parts[3]
}

// vhostAddrs are the addresses among a virtual host's domains, with or
// without a port.
func vhostAddrs(vh *state.VirtualHost) []netip.Addr {
	var out []netip.Addr
	for _, d := range vh.Domains {
		ip, err := netip.ParseAddr(strings.Trim(d, "[]"))
		if err != nil {
			ap, err2 := netip.ParseAddrPort(d)
			if err2 != nil {
				continue
			}
			ip = ap.Addr()
		}
		ip = ip.Unmap()
		if !ip.IsUnspecified() && !ip.IsLoopback() && !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	return out
}
