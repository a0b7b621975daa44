package node

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/meshlet/meshlet/state"
)

// Resolve picks where a connection from src to origDst goes, reading the
// current snapshot:
//
//   - a service VIP: one endpoint workload of the service (healthy unless
//     the service allows all, on this network, best routing preference
//     rank first when the mode is STRICT or FAILOVER, then weighted by
//     capacity within that rank), the service port mapped to the
//     endpoint's target port; PASSTHROUGH services go to origDst as is;
//   - a workload IP: that workload, port unchanged;
//   - anything else: origDst directly (traffic leaving the mesh).
//
// src may be nil when the source is not a known workload; it only
// matters for routing preferences.
func (p *Proxy) Resolve(src *state.Workload, origDst netip.AddrPort) (*Upstream, error) {
	p.init()
	origDst = netip.AddrPortFrom(origDst.Addr().Unmap(), origDst.Port())
	amb := p.Store.Load().Ambient
	if svc := amb.ServiceByVIP(p.Network, origDst.Addr()); svc != nil {
		return p.resolveService(amb, src, svc, origDst)
	}
	if w := amb.WorkloadByAddr(p.Network, origDst.Addr()); w != nil {
		if w.Waypoint != nil && !isWaypoint(amb, w.Waypoint, src) {
			return p.viaWaypoint(amb, w.Waypoint, w, nil, origDst)
		}
		return p.upstreamFor(w, nil, origDst)
	}
	return &Upstream{Addr: origDst}, nil
}

func (p *Proxy) resolveService(amb *state.Ambient, src *state.Workload, svc *state.Service, origDst netip.AddrPort) (*Upstream, error) {
	if svc.Waypoint != nil && !isWaypoint(amb, svc.Waypoint, src) {
		if _, ok := svc.TargetPort(nil, origDst.Port()); !ok {
			return nil, fmt.Errorf("%w: service %s has no port %d", ErrNoRoute, svc.Key(), origDst.Port())
		}
		return p.viaWaypoint(amb, svc.Waypoint, nil, svc, origDst)
	}
	lb := svc.LoadBalancing
	if lb != nil && lb.Mode == state.LBModePassthrough {
		return &Upstream{Service: svc, Addr: origDst}, nil
	}
	if _, ok := svc.TargetPort(nil, origDst.Port()); !ok {
		return nil, fmt.Errorf("%w: service %s has no port %d", ErrNoRoute, svc.Key(), origDst.Port())
	}
	allowUnhealthy := lb != nil && lb.AllowUnhealthy
	// Routing preferences rank endpoints only under a mode that asks for
	// it (ztunnel ignores them with the mode unset); otherwise every
	// endpoint ranks 0 and all share the pick.
	var prefs []state.LBScope
	strict := false
	if lb != nil && lb.Mode.Ranked() {
		prefs = lb.RoutingPreference
		strict = lb.Mode == state.LBModeStrict
	}
	// Keep only the best rank seen so far; no allocation beyond the
	// candidate slice.
	var cands []*state.Workload
	best := -1
	for _, w := range amb.Endpoints(svc.Key()) {
		if (len(w.Addresses) == 0 && w.Hostname == "") || w.Network != p.Network || (!allowUnhealthy && !w.Healthy()) {
			continue
		}
		r := rank(prefs, src, w)
		if strict && r < len(prefs) {
			continue
		}
		switch {
		case r > best:
			best, cands = r, append(cands[:0], w)
		case r == best:
			cands = append(cands, w)
		}
	}
	w := p.pickEndpoint(svc.Key(), cands)
	if w == nil {
		return nil, fmt.Errorf("%w: service %s has no usable endpoint", ErrNoRoute, svc.Key())
	}
	port, _ := svc.TargetPort(w, origDst.Port())
	if len(w.Addresses) == 0 {
		// A hostname-only endpoint (a ServiceEntry with DNS resolution):
		// resolved by DNS when dialed, always directly, as ztunnel does
		// not tunnel to a name either.
		return &Upstream{Workload: w, Service: svc, Host: w.Hostname, Port: port}, nil
	}
	return p.upstreamFor(w, svc, netip.AddrPortFrom(pickAddr(w.Addresses, origDst.Addr()), port))
}

// pickEndpoint chooses among the endpoints of the best rank by capacity,
// as ztunnel does: each is picked in proportion to its capacity, and one
// of capacity 0 never is (nil when all are 0; like ztunnel, the rank is
// not given up for a worse one). Equal capacities, the usual case, are
// taken in turn per service, which has the same proportions with no
// streaks; unequal ones are drawn at random, as ztunnel draws them all.
func (p *Proxy) pickEndpoint(key string, cands []*state.Workload) *state.Workload {
	var total uint64
	equal := true
	for _, w := range cands {
		total += uint64(w.Capacity)
		equal = equal && w.Capacity == cands[0].Capacity
	}
	if total == 0 {
		return nil
	}
	if equal {
		return cands[p.rr.next(key, len(cands))]
	}
	n := rand.Uint64N(total)
	for _, w := range cands {
		c := uint64(w.Capacity)
		if n < c {
			return w
		}
		n -= c
	}
	return nil // unreachable: n < total
}

// rank is how many of the routing preferences, in order, src and w share
// (ztunnel's failover: the longest matching prefix wins).
func rank(prefs []state.LBScope, src, w *state.Workload) int {
	if src == nil {
		return 0
	}
	n := 0
	for _, s := range prefs {
		var same bool
		switch s {
		case state.LBScopeRegion:
			same = src.Locality.Region == w.Locality.Region
		case state.LBScopeZone:
			same = src.Locality.Zone == w.Locality.Zone
		case state.LBScopeSubzone:
			same = src.Locality.SubZone == w.Locality.SubZone
		case state.LBScopeNode:
			same = src.Node == w.Node
		case state.LBScopeCluster:
			same = src.ClusterID == w.ClusterID
		case state.LBScopeNetwork:
			same = src.Network == w.Network
		case state.LBScopeUnspecified:
			same = true
		default:
			// A scope newer than our proto cannot be checked: it stops
			// the ranking, and STRICT then finds no endpoint.
			same = false
		}
		if !same {
			break
		}
		n++
	}
	return n
}

// pickAddr prefers an address of the same family as the one dialed.
func pickAddr(addrs []netip.Addr, like netip.Addr) netip.Addr {
	for _, a := range addrs {
		if a.Is4() == like.Is4() {
			return a
		}
	}
	return addrs[0]
}

func (p *Proxy) upstreamFor(w *state.Workload, svc *state.Service, addr netip.AddrPort) (*Upstream, error) {
	up := &Upstream{Workload: w, Service: svc, Addr: addr}
	if w.Tunnel != state.TunnelHBONE {
		return up, nil
	}
	ta, err := p.TunnelAddr(w)
	if err != nil {
		return nil, fmt.Errorf("workload %s: tunnel address: %w", w.UID, err)
	}
	up.Tunnel, up.TunnelAddr, up.Identity = true, ta, w.Identity()
	return up, nil
}

// defaultTunnelAddr is the workload's first address on 15008: the
// destination node captures HBONE for its pods there.
func defaultTunnelAddr(w *state.Workload) (netip.AddrPort, error) {
	if len(w.Addresses) == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: workload %s has no address", ErrNoRoute, w.UID)
	}
	return netip.AddrPortFrom(w.Addresses[0], HBONEPort), nil
}
