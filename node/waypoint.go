package node

import (
	"fmt"
	"net/netip"
	"slices"

	"github.com/meshlet/meshlet/state"
)

// Waypoints: a service or workload with a waypoint must be reached through
// it, so that the waypoint's L7 policies apply. The source proxy tunnels
// to a waypoint endpoint with the ORIGINAL destination (VIP:port or pod
// IP:port) as the CONNECT authority; the waypoint picks the endpoint. The
// waypoint's own connections to the destination are not redirected back to
// it.

// waypointFor resolves gw to one waypoint endpoint: by address (a waypoint
// pod, or a waypoint service VIP) or by service hostname.
func (p *Proxy) waypointFor(amb *state.Ambient, gw *state.GatewayAddress) (*state.Workload, error) {
	var svc *state.Service
	if gw.Hostname != "" {
		for _, s := range amb.ServicesByHostname(gw.Hostname) {
			if s.Namespace == gw.Namespace {
				svc = s
				break
			}
		}
	} else if w := amb.WorkloadByAddr(gw.Address.Network, gw.Address.Addr); w != nil {
		return w, nil
	} else {
		svc = amb.ServiceByVIP(gw.Address.Network, gw.Address.Addr)
	}
	if svc == nil {
		return nil, fmt.Errorf("%w: waypoint %s is unknown", ErrNoRoute, gatewayName(gw))
	}
	var eps []*state.Workload
	for _, w := range amb.Endpoints(svc.Key()) {
		if w.Healthy() && len(w.Addresses) > 0 {
			eps = append(eps, w)
		}
	}
	if len(eps) == 0 {
		return nil, fmt.Errorf("%w: waypoint %s has no healthy endpoint", ErrNoRoute, svc.Key())
	}
	return eps[p.rr.next("waypoint/"+svc.Key(), len(eps))], nil
}

func gatewayName(gw *state.GatewayAddress) string {
	if gw.Hostname != "" {
		return gw.Namespace + "/" + gw.Hostname
	}
	return gw.Address.String()
}

// isWaypoint reports whether w serves as the waypoint gw (same address,
// or an endpoint of the waypoint service).
func isWaypoint(amb *state.Ambient, gw *state.GatewayAddress, w *state.Workload) bool {
	if w == nil {
		return false
	}
	if gw.Hostname != "" {
		_, ok := w.Services[gw.Namespace+"/"+gw.Hostname]
		return ok
	}
	if slices.Contains(w.Addresses, gw.Address.Addr) {
		return true
	}
	if svc := amb.ServiceByVIP(gw.Address.Network, gw.Address.Addr); svc != nil {
		_, ok := w.Services[svc.Key()]
		return ok
	}
	return false
}

// viaWaypoint routes a connection for origDst through the waypoint gw.
func (p *Proxy) viaWaypoint(amb *state.Ambient, gw *state.GatewayAddress, dst *state.Workload, svc *state.Service, origDst netip.AddrPort) (*Upstream, error) {
	wp, err := p.waypointFor(amb, gw)
	if err != nil {
		return nil, err
	}
	ta, err := p.TunnelAddr(wp)
	if err != nil {
		return nil, fmt.Errorf("waypoint %s: tunnel address: %w", wp.UID, err)
	}
	if p.defaultTunnel && gw.HBONEPort != 0 {
		ta = netip.AddrPortFrom(ta.Addr(), gw.HBONEPort)
	}
	return &Upstream{Workload: dst, Service: svc, Waypoint: wp, Addr: origDst, Tunnel: true, TunnelAddr: ta, Identity: wp.Identity()}, nil
}

// fromWaypoint reports whether peerID (an authenticated SPIFFE ID) is the
// identity of the waypoint gw: of the waypoint workload, or of one of the
// waypoint service's endpoints. An unknown waypoint matches no one, so a
// workload whose waypoint has not arrived yet is not reachable directly.
func fromWaypoint(amb *state.Ambient, gw *state.GatewayAddress, peerID string) bool {
	if peerID == "" {
		return false
	}
	var svc *state.Service
	switch {
	case gw.Hostname != "":
		for _, s := range amb.ServicesByHostname(gw.Hostname) {
			if s.Namespace == gw.Namespace {
				svc = s
				break
			}
		}
	default:
		if w := amb.WorkloadByAddr(gw.Address.Network, gw.Address.Addr); w != nil {
			return w.Identity() == peerID
		}
		svc = amb.ServiceByVIP(gw.Address.Network, gw.Address.Addr)
	}
	if svc == nil {
		return false
	}
	for _, w := range amb.Endpoints(svc.Key()) {
		if w.Identity() == peerID {
			return true
		}
	}
	return false
}
