package resource

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds/istiopb/workloadpb"
)

// decodeAddressAny decodes an istio.workload.Address: its xDS name is the
// workload uid or the service "namespace/hostname".
func decodeAddressAny(raw *anypb.Any) (string, any, error) {
	var m workloadpb.Address
	if err := proto.Unmarshal(raw.GetValue(), &m); err != nil {
		return "", nil, fmt.Errorf("address: %w", err)
	}
	return DecodeAddress(&m)
}

// DecodeAddress decodes an Address into a *state.Workload or a
// *state.Service, with its xDS name.
func DecodeAddress(m *workloadpb.Address) (name string, value any, err error) {
	switch t := m.GetType().(type) {
	case *workloadpb.Address_Workload:
		w, err := DecodeWorkload(t.Workload)
		if err != nil {
			return t.Workload.GetUid(), nil, err
		}
		return w.UID, w, nil
	case *workloadpb.Address_Service:
		s, err := DecodeService(t.Service)
		if err != nil {
			return t.Service.GetNamespace() + "/" + t.Service.GetHostname(), nil, err
		}
		return s.Key(), s, nil
	}
	return "", nil, errors.New("address: type: one of workload or service is required")
}

// DecodeWorkload validates a Workload. Errors read
// `workload "uid": addresses[1]: ...`.
func DecodeWorkload(m *workloadpb.Workload) (*state.Workload, error) {
	w, err := decodeWorkload(m)
	if err != nil {
		return nil, fmt.Errorf("workload %q: %w", m.GetUid(), err)
	}
	return w, nil
}

func decodeWorkload(m *workloadpb.Workload) (*state.Workload, error) {
	if m.GetUid() == "" {
		return nil, errAt("uid", "is required")
	}
	if len(m.GetAddresses()) == 0 && m.GetHostname() == "" {
		return nil, errAt("addresses", "one of addresses or hostname is required")
	}
	w := &state.Workload{
		UID:                   m.GetUid(),
		Name:                  m.GetName(),
		Namespace:             m.GetNamespace(),
		Hostname:              m.GetHostname(),
		Network:               m.GetNetwork(),
		TrustDomain:           m.GetTrustDomain(),
		ServiceAccount:        m.GetServiceAccount(),
		Node:                  m.GetNode(),
		CanonicalName:         m.GetCanonicalName(),
		CanonicalRevision:     m.GetCanonicalRevision(),
		WorkloadName:          m.GetWorkloadName(),
		NativeTunnel:          m.GetNativeTunnel(),
		AuthorizationPolicies: append([]string(nil), m.GetAuthorizationPolicies()...),
		ClusterID:             m.GetClusterId(),
		Capacity:              1,
	}
	if w.TrustDomain == "" {
		w.TrustDomain = state.DefaultTrustDomain
	}
	if w.ServiceAccount == "" {
		w.ServiceAccount = state.DefaultServiceAccount
	}
	if m.GetTrustDomain() != "" && strings.ContainsAny(w.TrustDomain, "/:") {
		return nil, errAt("trust_domain", "%q is not a trust domain", w.TrustDomain)
	}
	if strings.Contains(w.ServiceAccount, "/") {
		return nil, errAt("service_account", "%q contains '/'", w.ServiceAccount)
	}
	if strings.Contains(w.Namespace, "/") {
		return nil, errAt("namespace", "%q contains '/'", w.Namespace)
	}
	for i, b := range m.GetAddresses() {
		a, err := ipFromBytes(b)
		if err != nil {
			return nil, atIndex("addresses", i, err)
		}
		w.Addresses = append(w.Addresses, a)
	}
	// Enums newer than our copy of the proto: a value that decides where
	// traffic goes or whom it is attributed to (tunnel_protocol, status,
	// network_mode) is rejected, as guessing could send plaintext or trust
	// the wrong peer; a purely descriptive one (workload_type) decodes as
	// "unknown" so the workload is not lost.
	switch m.GetTunnelProtocol() {
	case workloadpb.TunnelProtocol_NONE:
		w.Tunnel = state.TunnelNone
	case workloadpb.TunnelProtocol_HBONE:
		w.Tunnel = state.TunnelHBONE
	default:
		return nil, errAt("tunnel_protocol", "unknown value %d", m.GetTunnelProtocol())
	}
	switch m.GetStatus() {
	case workloadpb.WorkloadStatus_HEALTHY:
		w.Status = state.WorkloadHealthy
	case workloadpb.WorkloadStatus_UNHEALTHY:
		w.Status = state.WorkloadUnhealthy
	default:
		return nil, errAt("status", "unknown value %d", m.GetStatus())
	}
	switch m.GetNetworkMode() {
	case workloadpb.NetworkMode_STANDARD:
	case workloadpb.NetworkMode_HOST_NETWORK:
		// The IP is shared: never attribute a connection to it.
		w.HostNetwork = true
	default:
		return nil, errAt("network_mode", "unknown value %d", m.GetNetworkMode())
	}
	switch m.GetWorkloadType() {
	case workloadpb.WorkloadType_DEPLOYMENT:
		w.WorkloadType = "deployment"
	case workloadpb.WorkloadType_CRONJOB:
		w.WorkloadType = "cronjob"
	case workloadpb.WorkloadType_POD:
		w.WorkloadType = "pod"
	case workloadpb.WorkloadType_JOB:
		w.WorkloadType = "job"
	default:
		w.WorkloadType = "unknown"
	}
	var err error
	if w.Waypoint, err = decodeGateway(m.GetWaypoint()); err != nil {
		return nil, at("waypoint", err)
	}
	if w.NetworkGateway, err = decodeGateway(m.GetNetworkGateway()); err != nil {
		return nil, at("network_gateway", err)
	}
	if len(m.GetServices()) > 0 {
		w.Services = make(map[string][]state.PortMapping, len(m.GetServices()))
		for key, pl := range m.GetServices() {
			ns, host, ok := strings.Cut(key, "/")
			if !ok || ns == "" || host == "" {
				return nil, errAt(fmt.Sprintf("services[%q]", key), "key must be namespace/hostname")
			}
			ports, err := decodePorts(pl.GetPorts())
			if err != nil {
				return nil, at(fmt.Sprintf("services[%q]", key), err)
			}
			w.Services[key] = ports
		}
	}
	if l := m.GetLocality(); l != nil {
		w.Locality = state.Locality{Region: l.GetRegion(), Zone: l.GetZone(), SubZone: l.GetSubzone()}
	}
	if c := m.GetCapacity(); c != nil {
		w.Capacity = c.GetValue()
	}
	w.AllowWaypointBypass = m.GetAllowWaypointBypass()
	if w.AppTunnel, err = decodeAppTunnel(m.GetApplicationTunnel()); err != nil {
		return nil, at("application_tunnel", err)
	}
	return w, nil
}

// DecodeService validates a Service. Errors read
// `service "ns/host": ports[0].service_port: ...`.
func DecodeService(m *workloadpb.Service) (*state.Service, error) {
	s, err := decodeService(m)
	if err != nil {
		return nil, fmt.Errorf("service %q: %w", m.GetNamespace()+"/"+m.GetHostname(), err)
	}
	return s, nil
}

func decodeService(m *workloadpb.Service) (*state.Service, error) {
	if m.GetHostname() == "" {
		return nil, errAt("hostname", "is required")
	}
	if m.GetNamespace() == "" {
		return nil, errAt("namespace", "is required")
	}
	s := &state.Service{
		Name:            m.GetName(),
		Namespace:       m.GetNamespace(),
		Hostname:        m.GetHostname(),
		SubjectAltNames: append([]string(nil), m.GetSubjectAltNames()...),
		Canonical:       m.GetCanonical(),
	}
	for i, na := range m.GetAddresses() {
		a, err := ipFromBytes(na.GetAddress())
		if err != nil {
			return nil, atIndex("addresses", i, at("address", err))
		}
		s.Addresses = append(s.Addresses, state.NetworkAddr{Network: na.GetNetwork(), Addr: a})
	}
	var err error
	if s.Ports, err = decodePorts(m.GetPorts()); err != nil {
		return nil, err
	}
	if s.Waypoint, err = decodeGateway(m.GetWaypoint()); err != nil {
		return nil, at("waypoint", err)
	}
	if lb := m.GetLoadBalancing(); lb != nil {
		s.LoadBalancing = decodeLoadBalancing(lb)
	}
	// ip_families is not decoded (nothing is restricted by it), so a
	// value newer than our proto cannot reject the service either.
	return s, nil
}

// decodeLoadBalancing never fails: every value it can carry picks among
// the service's own endpoints, whose identities the tunnel still checks,
// so a value newer than our proto maps to the closest safe reading
// instead of rejecting the whole Address push. An unknown mode ranks as
// FAILOVER, an unknown health policy is ONLY_HEALTHY, and an unknown
// scope never matches (see state.LBModeUnknown, state.LBScopeUnknown).
func decodeLoadBalancing(m *workloadpb.LoadBalancing) *state.LoadBalancing {
	lb := &state.LoadBalancing{AllowUnhealthy: m.GetHealthPolicy() == workloadpb.LoadBalancing_ALLOW_ALL}
	switch m.GetMode() {
	case workloadpb.LoadBalancing_UNSPECIFIED_MODE:
		lb.Mode = state.LBModeUnspecified
	case workloadpb.LoadBalancing_STRICT:
		lb.Mode = state.LBModeStrict
	case workloadpb.LoadBalancing_FAILOVER:
		lb.Mode = state.LBModeFailover
	case workloadpb.LoadBalancing_PASSTHROUGH:
		lb.Mode = state.LBModePassthrough
	default:
		lb.Mode = state.LBModeUnknown
	}
	for _, sc := range m.GetRoutingPreference() {
		s := state.LBScopeUnknown
		if sc >= workloadpb.LoadBalancing_UNSPECIFIED_SCOPE && sc <= workloadpb.LoadBalancing_NETWORK {
			s = state.LBScope(sc)
		}
		lb.RoutingPreference = append(lb.RoutingPreference, s)
	}
	return lb
}

func decodePorts(ps []*workloadpb.Port) ([]state.PortMapping, error) {
	out := make([]state.PortMapping, 0, len(ps))
	for i, p := range ps {
		if p.GetServicePort() == 0 || p.GetServicePort() > 65535 {
			return nil, errAt(fmt.Sprintf("ports[%d].service_port", i), "%d is not a port", p.GetServicePort())
		}
		if p.GetTargetPort() > 65535 {
			return nil, errAt(fmt.Sprintf("ports[%d].target_port", i), "%d is not a port", p.GetTargetPort())
		}
		out = append(out, state.PortMapping{ServicePort: uint16(p.GetServicePort()), TargetPort: uint16(p.GetTargetPort())})
	}
	return out, nil
}

func decodeGateway(m *workloadpb.GatewayAddress) (*state.GatewayAddress, error) {
	if m == nil {
		return nil, nil
	}
	if m.GetHboneMtlsPort() > 65535 {
		return nil, errAt("hbone_mtls_port", "%d is not a port", m.GetHboneMtlsPort())
	}
	g := &state.GatewayAddress{HBONEPort: uint16(m.GetHboneMtlsPort())}
	switch d := m.GetDestination().(type) {
	case *workloadpb.GatewayAddress_Hostname:
		if d.Hostname.GetHostname() == "" {
			return nil, errAt("hostname.hostname", "is required")
		}
		g.Namespace, g.Hostname = d.Hostname.GetNamespace(), d.Hostname.GetHostname()
	case *workloadpb.GatewayAddress_Address:
		a, err := ipFromBytes(d.Address.GetAddress())
		if err != nil {
			return nil, at("address.address", err)
		}
		g.Address = state.NetworkAddr{Network: d.Address.GetNetwork(), Addr: a}
	default:
		return nil, errAt("destination", "one of hostname or address is required")
	}
	return g, nil
}

// ipFromBytes reads a 4- or 16-byte address; IPv4-mapped IPv6 becomes
// IPv4 so lookups by a connection's address find it.
func ipFromBytes(b []byte) (netip.Addr, error) {
	a, ok := netip.AddrFromSlice(b)
	if !ok {
		return netip.Addr{}, fmt.Errorf("%d bytes is not an IPv4 or IPv6 address", len(b))
	}
	return a.Unmap(), nil
}
