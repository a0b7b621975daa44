package state

import (
	"net/netip"
	"time"
)

// DiscoveryType mirrors Cluster.DiscoveryType.
type DiscoveryType int

const (
	ClusterStatic DiscoveryType = iota
	ClusterStrictDNS
	ClusterLogicalDNS
	ClusterEDS
	// ClusterOriginalDst sends to the connection's original destination.
	ClusterOriginalDst
)

func (t DiscoveryType) String() string {
	switch t {
	case ClusterStatic:
		return "STATIC"
	case ClusterStrictDNS:
		return "STRICT_DNS"
	case ClusterLogicalDNS:
		return "LOGICAL_DNS"
	case ClusterEDS:
		return "EDS"
	case ClusterOriginalDst:
		return "ORIGINAL_DST"
	}
	return "UNKNOWN"
}

// LBPolicy mirrors Cluster.LbPolicy (and the equivalent typed
// load_balancing_policy extensions).
type LBPolicy int

const (
	LBRoundRobin LBPolicy = iota
	LBLeastRequest
	LBRandom
	LBRingHash
	LBMaglev
)

func (p LBPolicy) String() string {
	switch p {
	case LBRoundRobin:
		return "ROUND_ROBIN"
	case LBLeastRequest:
		return "LEAST_REQUEST"
	case LBRandom:
		return "RANDOM"
	case LBRingHash:
		return "RING_HASH"
	case LBMaglev:
		return "MAGLEV"
	}
	return "UNKNOWN"
}

// UpstreamProtocol says which HTTP version the proxy speaks to a cluster.
type UpstreamProtocol int

const (
	UpstreamHTTP1 UpstreamProtocol = iota
	UpstreamHTTP2
	// UpstreamUseDownstream uses the downstream request's protocol.
	UpstreamUseDownstream
)

// Cluster mirrors the supported subset of envoy.config.cluster.v3.Cluster.
type Cluster struct {
	Name string
	// Static clusters come from the bootstrap and are never replaced or
	// removed by xDS.
	Static bool
	Type   DiscoveryType
	// EDSServiceName is the ClusterLoadAssignment name to watch for EDS
	// clusters (defaults to Name).
	EDSServiceName string
	// ConnectTimeout: default 5s.
	ConnectTimeout time.Duration

	LBPolicy LBPolicy
	// LeastRequest: ChoiceCount default 2; ActiveRequestBias default 1.0.
	ChoiceCount       uint32
	ActiveRequestBias float64
	// RingHash: MinRingSize default 1024, MaxRingSize default 8M.
	MinRingSize, MaxRingSize uint64
	// Maglev: TableSize default 65537 (must be prime).
	MaglevTableSize uint64

	Protocol UpstreamProtocol
	// HTTP2MaxConcurrentStreams caps streams per upstream HTTP/2 connection
	// (default 2147483647 in Envoy; the peer's SETTINGS also cap it).
	HTTP2MaxConcurrentStreams uint32
	// UpstreamIdleTimeout closes idle pooled connections (default 1h).
	UpstreamIdleTimeout time.Duration
	// MaxRequestsPerConnection, 0 = unlimited.
	MaxRequestsPerConnection uint32
	// UpstreamMaxConnectionDuration is common_http_protocol_options
	// .max_connection_duration (0 = none): a pooled connection older than
	// this takes no new requests and closes once its requests end.
	UpstreamMaxConnectionDuration time.Duration
	// UpstreamMaxStreamDuration is common_http_protocol_options
	// .max_stream_duration (0 = none): each upstream request (one attempt,
	// body included) is reset when it runs longer.
	UpstreamMaxStreamDuration time.Duration
	// HTTP1Trailers is http_protocol_options.enable_trailers: the HTTP/1.1
	// codec passes response trailers on (Envoy drops them by default).
	HTTP1Trailers bool

	// LoadAssignment holds the endpoints for STATIC and DNS clusters (for DNS
	// clusters Endpoint.Hostname is set and Address is empty until resolved).
	LoadAssignment *ClusterLoadAssignment
	// DNSRefreshRate: default 5s. DNSLookupFamily: "auto"|"v4"|"v6".
	DNSRefreshRate  time.Duration
	DNSLookupFamily string

	// ORIGINAL_DST (original_dst_lb_config, cleanup_interval): HTTP requests
	// go to the address in header OriginalDstHeader when set (use_http_header;
	// Envoy's default name x-envoy-original-dst-host), else to the
	// connection's original destination; hosts idle for
	// OriginalDstCleanupInterval (0 = 5s) are dropped.
	OriginalDstHeader          string
	OriginalDstCleanupInterval time.Duration
	// OriginalDstPortOverride is original_dst_lb_config.upstream_port_override
	// (0 = keep the original port); Istio sets 15008 on its HBONE tunnel
	// cluster. OriginalDstWaypointKey is set when metadata_key is Istio's
	// envoy.filters.listener.original_dst/waypoint: an endpoint's
	// InternalEndpoint.Waypoint overrides the destination.
	OriginalDstPortOverride uint32
	OriginalDstWaypointKey  bool

	// TLS, when set, originates TLS to the upstream (UpstreamTlsContext).
	TLS *UpstreamTLS
	// AutoSNI is HttpProtocolOptions.upstream_http_protocol_options
	// (upstream_http.go); HTTP requests only.
	AutoSNI AutoSNI
	// TransportSocketMatches pick a transport per endpoint by metadata; an
	// endpoint matching none uses TLS above.
	TransportSocketMatches []TransportSocketMatch

	// Locality weighted LB is on when CommonLbConfig.locality_weighted_lb_config
	// is set.
	LocalityWeighted bool
	// HealthyPanicThreshold is common_lb_config.healthy_panic_threshold in
	// percent: a priority level with a smaller share of usable hosts is in
	// panic. nil is Envoy's default, 50; 0 disables panic mode.
	HealthyPanicThreshold *float64

	// UpstreamBind is upstream_bind_config: the local address every
	// upstream connection of the cluster binds before connecting (Istio
	// binds its inbound clusters to 127.0.0.6). nil lets the kernel choose.
	UpstreamBind *UpstreamBind

	// OutlierDetection is nil when the cluster has none (no ejection).
	OutlierDetection *OutlierDetection
	// CircuitBreakers is nil for the defaults (DefaultCircuitBreakers).
	CircuitBreakers *CircuitBreakers
	// HealthChecks are the active health checks; like Envoy, the decoder
	// accepts at most one.
	HealthChecks []HealthCheck

	// HBONE, when set, carries every connection to this cluster's hosts
	// inside an HBONE tunnel (mTLS HTTP/2 CONNECT) instead of a direct TCP
	// connection. Set from the bootstrap or by the embedding program.
	HBONE *HBONE

	// GCPAudiences are the gcp_authn audiences from the cluster metadata
	// (nil when there are none).
	GCPAudiences GCPAudiences
}

// UpstreamBind is the supported subset of envoy.config.core.v3.BindConfig.
type UpstreamBind struct {
	// Source is source_address; port 0 lets the kernel pick the port. It
	// is the zero AddrPort when only Freebind is set.
	Source netip.AddrPort
	// Alternate is the one additional source address
	// (extra_source_addresses or additional_source_addresses), of the other
	// IP family than Source, for dual-stack clusters; zero when unset.
	Alternate netip.AddrPort
	// Freebind sets IP_FREEBIND, so the source need not be assigned to an
	// interface yet.
	Freebind bool
}

// For returns the source address to bind for a connection to dst: the
// configured address of dst's family, else Source (Envoy's default local
// address selector). The result is invalid when nothing is to be bound.
func (b *UpstreamBind) For(dst netip.Addr) netip.AddrPort {
	if b == nil {
		return netip.AddrPort{}
	}
	if b.Alternate.IsValid() && dst.IsValid() && b.Alternate.Addr().Is4() == dst.Unmap().Is4() {
		return b.Alternate
	}
	return b.Source
}

// HBONE says how a cluster's connections are tunneled. It is meshlet's
// flattened form of what Istio expresses with an internal listener and
// tunneling_config: the host address is the CONNECT target, and the tunnel
// endpoint is the same IP at Port unless Address overrides it.
type HBONE struct {
	// Port of the HBONE endpoint on each host (default 15008).
	Port uint32
	// Address, when set, is the tunnel endpoint for all hosts (ip:port), for
	// example a waypoint or an east-west gateway.
	Address string
	// Identity is the SPIFFE ID the tunnel endpoint must present; empty
	// accepts any identity the mesh roots verify.
	Identity string
	// Internal is set for Istio's shape: the cluster's transport socket is
	// internal_upstream and its endpoints name an InternalListener, which
	// says where and how to tunnel (resolved per connection from the
	// snapshot). Cluster is the tunneled cluster's own name, to find the
	// endpoint being dialed; Port, Address and Identity are unused then.
	Internal bool
	Cluster  string
}

// UpstreamTLS is the supported subset of UpstreamTlsContext with static
// certificates.
type UpstreamTLS struct {
	SNI          string
	ALPN         []string
	CertChainPEM []byte
	KeyPEM       []byte
	// RootCAPEM verifies the upstream; empty means system roots.
	RootCAPEM []byte
	// InsecureSkipVerify is never set by the decoder; tests only.
	InsecureSkipVerify bool
	// SDS, when set, names secrets that supply the client certificate
	// and/or the roots instead of the static PEM fields above.
	SDS SDSRef
	// SystemRoots is validation_context.system_root_certs (gRFC A82):
	// verify against the OS trust store instead of the mesh CA.
	SystemRoots bool
	// SANMatchers restrict the accepted server certificates (any one
	// matching suffices); empty accepts any name.
	SANMatchers []SANMatcher
	Params      TLSParams
}

// HealthStatus mirrors envoy.config.core.v3.HealthStatus.
type HealthStatus int

const (
	HealthUnknown HealthStatus = iota
	HealthHealthy
	HealthUnhealthy
	HealthDraining
	HealthTimeout
	HealthDegraded
)

// Usable reports whether an endpoint in this state takes new traffic when
// healthy endpoints exist: UNKNOWN and HEALTHY do (Envoy treats UNKNOWN as
// healthy), DEGRADED only when nothing healthy is left.
func (h HealthStatus) Usable() bool { return h == HealthUnknown || h == HealthHealthy }

// Locality mirrors envoy.config.core.v3.Locality.
type Locality struct {
	Region, Zone, SubZone string
}

// ClusterLoadAssignment mirrors envoy.config.endpoint.v3.ClusterLoadAssignment.
type ClusterLoadAssignment struct {
	ClusterName string
	Localities  []LocalityEndpoints
	// OverprovisioningFactor in percent; default 140.
	OverprovisioningFactor uint32
}

// LocalityEndpoints mirrors LocalityLbEndpoints.
type LocalityEndpoints struct {
	Locality Locality
	Priority uint32
	// Weight is load_balancing_weight; 0 means unset (then locality weighting
	// treats the locality as weight 1 only if LocalityWeighted is off).
	Weight    uint32
	Endpoints []Endpoint
}

// Endpoint mirrors LbEndpoint.
type Endpoint struct {
	// Address is "ip:port" (ready to dial) for resolved endpoints.
	Address string
	// Hostname is the socket address host for DNS clusters, or the
	// endpoint's hostname field otherwise.
	Hostname string
	Port     uint32
	// Weight is load_balancing_weight; default 1.
	Weight uint32
	Health HealthStatus
	// TransportSocketMatch is the string values of the endpoint's
	// filter_metadata["envoy.transport_socket_match"] (Istio sets
	// tlsMode: istio there); other metadata is not decoded.
	TransportSocketMatch map[string]string
	// Internal is set for an envoy_internal_address endpoint (Istio's
	// HBONE origination shape); Address is then the tunneled destination.
	Internal *InternalEndpoint
}
