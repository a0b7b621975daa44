package state

import "net/netip"

// Type URLs of the Istio Workload API resources (delta xDS only).
const (
	TypeAddress       = "type.googleapis.com/istio.workload.Address"
	TypeAuthorization = "type.googleapis.com/istio.security.Authorization"
)

// DefaultTrustDomain and DefaultServiceAccount fill a Workload's elided
// identity fields, as the Workload API allows the mesh defaults to be left
// out.
const (
	DefaultTrustDomain    = "cluster.local"
	DefaultServiceAccount = "default"
)

// TunnelProtocol is how traffic reaches a workload.
type TunnelProtocol uint8

const (
	// TunnelNone: connect to the workload directly, in plaintext.
	TunnelNone TunnelProtocol = iota
	// TunnelHBONE: the workload is captured by a node proxy; tunnel over
	// HBONE (mTLS HTTP/2 CONNECT on 15008).
	TunnelHBONE
)

func (t TunnelProtocol) String() string {
	if t == TunnelHBONE {
		return "HBONE"
	}
	return "NONE"
}

// WorkloadStatus is a workload's readiness.
type WorkloadStatus uint8

const (
	WorkloadHealthy WorkloadStatus = iota
	WorkloadUnhealthy
)

func (s WorkloadStatus) String() string {
	if s == WorkloadUnhealthy {
		return "UNHEALTHY"
	}
	return "HEALTHY"
}

// NetworkAddr is an IP on a network; the (network, IP) pair identifies a
// workload or a service VIP. The default network is "".
type NetworkAddr struct {
	Network string
	Addr    netip.Addr
}

func (a NetworkAddr) String() string { return a.Network + "/" + a.Addr.String() }

// PortMapping maps a service port (frontend) to a target port (backend).
// A zero TargetPort on a Service means "same as ServicePort"; on a
// Workload's service entry it means "use the Service's target port".
type PortMapping struct {
	ServicePort uint16
	TargetPort  uint16
}

// GatewayAddress is a waypoint or network gateway: either a service
// (Namespace/Hostname) or an address, plus its HBONE mTLS port.
type GatewayAddress struct {
	Namespace string
	Hostname  string
	Address   NetworkAddr
	HBONEPort uint16
}

// Workload is one endpoint of the Istio Workload API (a pod, a VM, a
// WorkloadEntry), keyed by UID.
type Workload struct {
	UID       string
	Name      string
	Namespace string
	// Addresses are the workload's IPs (unmapped); empty for hostname-only
	// workloads.
	Addresses []netip.Addr
	Hostname  string
	Network   string
	Tunnel    TunnelProtocol
	// TrustDomain and ServiceAccount are filled with the mesh defaults
	// when the resource elides them.
	TrustDomain    string
	ServiceAccount string
	Waypoint       *GatewayAddress
	NetworkGateway *GatewayAddress
	// Node is the name of the node the workload runs on; a node proxy
	// serves inbound traffic for its own node's workloads only.
	Node              string
	CanonicalName     string
	CanonicalRevision string
	// WorkloadType is deployment, cronjob, pod or job; "unknown" for a
	// type newer than meshlet's proto (it only describes the workload).
	WorkloadType string
	WorkloadName string
	NativeTunnel bool
	// Services maps "namespace/hostname" to this workload's ports for that
	// service (target port overrides).
	Services map[string][]PortMapping
	// AuthorizationPolicies are the "namespace/name" keys of the
	// selector-scoped policies that apply to this workload.
	AuthorizationPolicies []string
	Status                WorkloadStatus
	ClusterID             string
	Locality              Locality
	// HostNetwork workloads share their IP with others and are never
	// looked up by address.
	HostNetwork bool
	// Capacity is the relative weight among a service's endpoints of one
	// rank (default 1; 0 is never picked).
	Capacity uint32
	// AllowWaypointBypass (a meshlet extension, Workload field 1001) lets
	// peers other than the workload's waypoint reach it over HBONE.
	AllowWaypointBypass bool
	// AppTunnel (application_tunnel) is how inbound HBONE deliveries
	// reach the workload; nil is plain TCP to the original port.
	AppTunnel *AppTunnel
}

// Identity is the workload's SPIFFE ID.
func (w *Workload) Identity() string {
	return "spiffe://" + w.TrustDomain + "/ns/" + w.Namespace + "/sa/" + w.ServiceAccount
}

// Healthy reports whether the workload may receive new connections.
func (w *Workload) Healthy() bool { return w.Status == WorkloadHealthy }

// LBMode is a Service's endpoint selection mode.
type LBMode uint8

const (
	LBModeUnspecified LBMode = iota
	LBModeStrict
	LBModeFailover
	LBModePassthrough
	// LBModeUnknown is a mode newer than meshlet's copy of the Workload
	// API. The service is kept and its endpoints are picked as with
	// FAILOVER: every endpoint is one of the service's, so the worst
	// outcome is a less local pick, never a wrong destination.
	LBModeUnknown
)

func (m LBMode) String() string {
	return [...]string{"UNSPECIFIED_MODE", "STRICT", "FAILOVER", "PASSTHROUGH", "UNKNOWN"}[m]
}

// Ranked reports whether the routing preferences rank endpoints: only
// with STRICT, FAILOVER or an unknown mode, as ztunnel ignores them
// otherwise.
func (m LBMode) Ranked() bool {
	return m == LBModeStrict || m == LBModeFailover || m == LBModeUnknown
}

// LBScope is one routing preference scope.
type LBScope uint8

const (
	LBScopeUnspecified LBScope = iota
	LBScopeRegion
	LBScopeZone
	LBScopeSubzone
	LBScopeNode
	LBScopeCluster
	LBScopeNetwork
	// LBScopeUnknown is a scope newer than meshlet's copy of the Workload
	// API. It never counts as shared: ranking stops there under FAILOVER,
	// and STRICT, which could not check it, picks no endpoint.
	LBScopeUnknown
)

func (s LBScope) String() string {
	return [...]string{"UNSPECIFIED_SCOPE", "REGION", "ZONE", "SUBZONE", "NODE", "CLUSTER", "NETWORK", "UNKNOWN"}[s]
}

// LoadBalancing is a Service's endpoint selection policy.
type LoadBalancing struct {
	Mode              LBMode
	RoutingPreference []LBScope
	// AllowUnhealthy is HealthPolicy ALLOW_ALL (an unknown policy counts
	// as ONLY_HEALTHY, the narrower one).
	AllowUnhealthy bool
}

// Service is a group of workloads reachable at VIPs, keyed by
// "namespace/hostname".
type Service struct {
	Name      string
	Namespace string
	Hostname  string
	// Addresses are the VIPs; empty for a headless service.
	Addresses       []NetworkAddr
	Ports           []PortMapping
	SubjectAltNames []string
	Waypoint        *GatewayAddress
	LoadBalancing   *LoadBalancing
	Canonical       bool
}

// Key is the service's xDS name and the key of Workload.Services.
func (s *Service) Key() string { return s.Namespace + "/" + s.Hostname }

// TargetPort maps a service port to the port w listens on: w's own
// mapping first, then the service's, then the port unchanged. ok is false
// when the service does not expose port.
func (s *Service) TargetPort(w *Workload, port uint16) (uint16, bool) {
	var svcTarget uint16
	found := false
	for _, p := range s.Ports {
		if p.ServicePort == port {
			svcTarget, found = p.TargetPort, true
			break
		}
	}
	if !found {
		return 0, false
	}
	if w != nil {
		for _, p := range w.Services[s.Key()] {
			if p.ServicePort == port && p.TargetPort != 0 {
				return p.TargetPort, true
			}
		}
	}
	if svcTarget == 0 {
		return port, true
	}
	return svcTarget, true
}

// HostPort formats an address and port for dialing.
func HostPort(a netip.Addr, port uint16) string {
	return netip.AddrPortFrom(a, port).String()
}

// MarshalText methods make dumps (admin /config_dump) show enum names.

func (t TunnelProtocol) MarshalText() ([]byte, error) { return []byte(t.String()), nil }
func (s WorkloadStatus) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
func (m LBMode) MarshalText() ([]byte, error)         { return []byte(m.String()), nil }
func (s LBScope) MarshalText() ([]byte, error)        { return []byte(s.String()), nil }
