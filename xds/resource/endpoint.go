package resource

import (
	"errors"
	"fmt"
	"net/netip"
	"sort"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"

	"github.com/meshlet/meshlet/state"
)

// addrMode says what an endpoint's socket address may hold.
type addrMode int

const (
	// addrIP requires a literal IP (STATIC and EDS clusters).
	addrIP addrMode = iota
	// addrHostname keeps the host for DNS resolution (STRICT/LOGICAL_DNS).
	addrHostname
)

// DecodeEndpoints validates an EDS ClusterLoadAssignment and converts it to
// the state form. The error names the assignment and the field path.
func DecodeEndpoints(cla *endpointv3.ClusterLoadAssignment) (*state.ClusterLoadAssignment, error) {
	if cla.GetClusterName() == "" {
		return nil, fmt.Errorf("cluster_load_assignment %q: cluster_name: is required", "")
	}
	out, err := decodeLoadAssignment(cla, addrIP)
	if err != nil {
		return nil, fmt.Errorf("cluster_load_assignment %q: %w", cla.GetClusterName(), err)
	}
	return out, nil
}

func decodeLoadAssignment(cla *endpointv3.ClusterLoadAssignment, mode addrMode) (*state.ClusterLoadAssignment, error) {
	out := &state.ClusterLoadAssignment{
		ClusterName:            cla.GetClusterName(),
		OverprovisioningFactor: state.DefaultOverprovisioning,
	}
	if len(cla.GetNamedEndpoints()) > 0 {
		return nil, errAt("named_endpoints", "are not supported")
	}
	if p := cla.GetPolicy(); p != nil {
		if len(p.GetDropOverloads()) > 0 {
			return nil, errAt("policy.drop_overloads", "are not supported")
		}
		if v := p.GetOverprovisioningFactor(); v != nil {
			if v.GetValue() == 0 {
				return nil, errAt("policy.overprovisioning_factor", "must be greater than 0")
			}
			out.OverprovisioningFactor = v.GetValue()
		}
	}
	priorities := map[uint32]bool{}
	for i, le := range cla.GetEndpoints() {
		l, err := decodeLocalityEndpoints(le, mode)
		if err != nil {
			return nil, atIndex("endpoints", i, err)
		}
		priorities[l.Priority] = true
		out.Localities = append(out.Localities, l)
	}
	if err := checkContiguous(priorities); err != nil {
		return nil, at("endpoints", err)
	}
	return out, nil
}

// checkContiguous enforces Envoy's rule that priorities run 0..N without
// gaps; a gap would leave a level that failover can never reach.
func checkContiguous(set map[uint32]bool) error {
	ps := make([]uint32, 0, len(set))
	for p := range set {
		ps = append(ps, p)
	}
	sort.Slice(ps, func(i, j int) bool { return ps[i] < ps[j] })
	for i, p := range ps {
		if p != uint32(i) {
			return fmt.Errorf("priorities must be contiguous from 0: priority %d is missing (have %v)", i, ps)
		}
	}
	return nil
}

func decodeLocalityEndpoints(le *endpointv3.LocalityLbEndpoints, mode addrMode) (state.LocalityEndpoints, error) {
	out := state.LocalityEndpoints{Priority: le.GetPriority()}
	if l := le.GetLocality(); l != nil {
		out.Locality = state.Locality{Region: l.GetRegion(), Zone: l.GetZone(), SubZone: l.GetSubZone()}
	}
	if w := le.GetLoadBalancingWeight(); w != nil {
		if w.GetValue() == 0 {
			return out, errAt("load_balancing_weight", "must be at least 1")
		}
		out.Weight = w.GetValue()
	}
	if le.GetLedsClusterLocalityConfig() != nil {
		return out, errAt("leds_cluster_locality_config", "is not supported")
	}
	for i, lb := range le.GetLbEndpoints() {
		ep, err := decodeLbEndpoint(lb, mode)
		if err != nil {
			return out, atIndex("lb_endpoints", i, err)
		}
		out.Endpoints = append(out.Endpoints, ep)
	}
	return out, nil
}

func decodeLbEndpoint(lb *endpointv3.LbEndpoint, mode addrMode) (state.Endpoint, error) {
	out := state.Endpoint{Weight: 1}
	if lb.GetEndpointName() != "" {
		return out, errAt("endpoint_name", "named endpoints are not supported")
	}
	ep := lb.GetEndpoint()
	if ep == nil {
		return out, errAt("endpoint", "is required")
	}
	if w := lb.GetLoadBalancingWeight(); w != nil {
		if w.GetValue() == 0 {
			return out, errAt("load_balancing_weight", "must be at least 1")
		}
		out.Weight = w.GetValue()
	}
	h, err := healthStatus(lb.GetHealthStatus())
	if err != nil {
		return out, at("health_status", err)
	}
	out.Health = h
	out.TransportSocketMatch = transportSocketMatchMetadata(lb.GetMetadata())
	out.Hostname = ep.GetHostname()
	if ia := ep.GetAddress().GetEnvoyInternalAddress(); ia != nil {
		return decodeInternalEndpoint(out, lb, ia) // Istio's HBONE shape, hbone_istio.go
	}
	host, port, err := socketAddress(ep.GetAddress())
	if err != nil {
		return out, at("endpoint.address", err)
	}
	out.Port = port
	ip, perr := netip.ParseAddr(host)
	switch {
	case perr == nil:
		out.Address = netip.AddrPortFrom(ip.Unmap(), uint16(port)).String()
	case mode == addrHostname:
		// Resolved later by the DNS cluster; the socket host wins over the
		// informational hostname field.
		out.Hostname = host
	default:
		return out, errAt("endpoint.address.socket_address.address", "%q is not an IP address", host)
	}
	return out, nil
}

func healthStatus(h corev3.HealthStatus) (state.HealthStatus, error) {
	switch h {
	case corev3.HealthStatus_UNKNOWN:
		return state.HealthUnknown, nil
	case corev3.HealthStatus_HEALTHY:
		return state.HealthHealthy, nil
	case corev3.HealthStatus_UNHEALTHY:
		return state.HealthUnhealthy, nil
	case corev3.HealthStatus_DRAINING:
		return state.HealthDraining, nil
	case corev3.HealthStatus_TIMEOUT:
		return state.HealthTimeout, nil
	case corev3.HealthStatus_DEGRADED:
		return state.HealthDegraded, nil
	}
	return 0, errors.New("unknown value " + h.String())
}
