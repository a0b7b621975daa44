package state

import (
	"net/netip"
	"time"
)

// Listener is a decoded envoy.config.listener.v3.Listener.
type Listener struct {
	Name string
	// Static listeners come from the bootstrap and are never replaced or
	// removed by xDS.
	Static bool
	// Address is the socket address to bind. Only TCP socket addresses are
	// supported.
	Address netip.AddrPort
	// BindToPort false means the listener opens no socket of its own: it only
	// receives connections handed over by a listener with UseOriginalDst
	// whose original destination matches Address (Envoy's virtual listeners).
	BindToPort bool
	// UseOriginalDst makes connections accepted here be handed to the
	// listener whose Address equals the connection's original destination,
	// if there is one; otherwise this listener's own filter chains serve it.
	UseOriginalDst bool
	// OriginalDstFilter is set when the listener has the original_dst
	// listener filter: a connection's destination (filter chain match,
	// ORIGINAL_DST clusters) is its NAT-redirected original destination
	// even without UseOriginalDst, as istiod's virtualInbound expects.
	OriginalDstFilter bool
	// Transparent opens the socket with IP_TRANSPARENT (Envoy's
	// transparent), which TPROXY-diverted traffic needs; an accepted
	// connection's local address is then its original destination.
	Transparent bool
	// FilterChains are matched in Envoy's order of precedence (see
	// FilterChainMatch); DefaultFilterChain serves when none matches.
	FilterChains       []*FilterChain
	DefaultFilterChain *FilterChain
	// ListenerFiltersTimeout bounds how long peeking (TLS inspector, HTTP
	// inspector) may wait for the first bytes. Zero means Envoy's default
	// 15s; a negative value means no limit (an explicit 0s in xDS, which
	// Envoy reads as disabled).
	ListenerFiltersTimeout time.Duration
	// ContinueOnListenerFiltersTimeout serves a connection whose peek timed
	// out with what was detected so far (raw_buffer, no SNI/ALPN) instead of
	// closing it, which is Envoy's default.
	ContinueOnListenerFiltersTimeout bool
	// Internal is set for an internal listener (no socket, BindToPort
	// false): the data plane does not serve it; the HBONE client reads it
	// when a cluster's endpoints name it. FilterChains are empty then.
	Internal *InternalListener
}

// FilterChainMatch mirrors envoy.config.listener.v3.FilterChainMatch. Empty
// fields match anything.
type FilterChainMatch struct {
	DestinationPort      uint32 // 0 = any
	PrefixRanges         []netip.Prefix
	SourceType           SourceType
	SourcePrefixRanges   []netip.Prefix
	SourcePorts          []uint32
	ServerNames          []string // exact or "*.suffix"
	TransportProtocol    string   // "", "raw_buffer" or "tls"
	ApplicationProtocols []string // ALPN values, or "http/1.1"/"h2c" from the HTTP inspector
}

// SourceType mirrors FilterChainMatch.ConnectionSourceType.
type SourceType int

const (
	SourceAny SourceType = iota
	SourceSameIPOrLoopback
	SourceExternal
)

// FilterChain is one filter chain: an optional TLS termination and exactly
// one terminal network filter (TCPProxy or HTTP).
type FilterChain struct {
	Name  string
	Match FilterChainMatch
	// TLS, when set, terminates TLS on this chain (DownstreamTlsContext).
	TLS *DownstreamTLS
	// Exactly one of TCPProxy and HTTP is set.
	TCPProxy *TCPProxy
	HTTP     *HTTPConnectionManager
	// RateLimits are network local_ratelimit filters before the terminal
	// filter, in order.
	RateLimits []*NetworkRateLimit
	// RBAC are network RBAC filters before the terminal filter, in order;
	// a connection must pass all of them.
	RBAC []*NetworkRBAC
	// ConnectionLimits are network connection_limit filters before the
	// terminal filter, in order; a connection over any limit is closed.
	ConnectionLimits []*ConnectionLimit
}

// ConnectionLimit mirrors
// envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit: at
// most MaxConnections open connections through the filter chain; the
// connection that would exceed it is closed after Delay.
type ConnectionLimit struct {
	StatPrefix     string
	MaxConnections uint64
	Delay          time.Duration
}

// DownstreamTLS is the subset of DownstreamTlsContext supported with static
// certificates or SDS secret references.
type DownstreamTLS struct {
	CertChainPEM []byte
	KeyPEM       []byte
	// ALPN is common_tls_context.alpn_protocols; empty means h2,http/1.1 for
	// HTTP chains, none for TCP chains.
	ALPN []string
	// ClientCAPEM, when set, requires and verifies client certificates.
	ClientCAPEM       []byte
	RequireClientCert bool
	// SDS, when set, names secrets that supply the certificate and/or the
	// client CA instead of the static PEM fields above.
	SDS SDSRef
	// SANMatchers restrict accepted client certificates (any one matching
	// suffices); empty accepts any verified client.
	SANMatchers []SANMatcher
	Params      TLSParams
}

// TCPProxy mirrors envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.
type TCPProxy struct {
	StatPrefix string
	// Cluster, or WeightedClusters when several.
	Cluster          string
	WeightedClusters []WeightedCluster
	// IdleTimeout closes the connection after this long without bytes in
	// either direction. Envoy's default is 1h; zero disables it.
	IdleTimeout time.Duration
	// MaxDownstreamConnectionDuration closes both sides this long after
	// the connection was accepted by the filter (0 = no limit).
	MaxDownstreamConnectionDuration time.Duration
	// AccessLogs are written when the connection ends.
	AccessLogs []*AccessLog
}

// CodecType mirrors HttpConnectionManager.CodecType.
type CodecType int

const (
	CodecAuto CodecType = iota
	CodecHTTP1
	CodecHTTP2
)

func (c CodecType) String() string {
	switch c {
	case CodecHTTP1:
		return "HTTP1"
	case CodecHTTP2:
		return "HTTP2"
	}
	return "AUTO"
}

// HTTPConnectionManager mirrors the supported subset of
// envoy.extensions.filters.network.http_connection_manager.v3.
type HTTPConnectionManager struct {
	StatPrefix string
	Codec      CodecType
	// Exactly one of RDSName and RouteConfig is set. With RDSName the route
	// configuration is looked up by name in the current Snapshot per request.
	RDSName     string
	RouteConfig *RouteConfig

	// StreamIdleTimeout: Envoy default 5m; zero disables.
	StreamIdleTimeout time.Duration
	// HTTP1Trailers is http_protocol_options.enable_trailers: HTTP/1.1
	// responses carry trailers downstream (Envoy drops them by default).
	HTTP1Trailers bool
	// RequestTimeout bounds receiving the whole request; zero disables.
	RequestTimeout time.Duration
	// RequestHeadersTimeout bounds receiving request headers; zero disables.
	RequestHeadersTimeout time.Duration
	// IdleTimeout (common_http_protocol_options.idle_timeout) closes a
	// downstream connection with no active streams; Envoy default 1h.
	IdleTimeout time.Duration
	// MaxRequestHeadersKB: Envoy default 60, max 8192.
	MaxRequestHeadersKB uint32
	// MaxHeadersCount: Envoy default 100.
	MaxHeadersCount uint32
	// MaxRequestsPerConnection (common_http_protocol_options) closes a
	// downstream connection after this many requests (HTTP/1.1: the last
	// response carries Connection: close; HTTP/2: GOAWAY); 0 = unlimited.
	MaxRequestsPerConnection uint32
	// MaxStreamDuration (common_http_protocol_options) bounds every
	// request's whole lifetime on this connection manager; zero disables.
	// A route's max_stream_duration takes precedence.
	MaxStreamDuration time.Duration
	// MaxConnectionDuration (common_http_protocol_options) drains a
	// downstream connection once it has been open this long: HTTP/1.1
	// closes it after the response in flight (an idle one at once), HTTP/2
	// sends GOAWAY and closes once the open streams are done (they are not
	// cut, as in Envoy). Zero: no limit.
	MaxConnectionDuration time.Duration
	// DrainTimeout is drain_timeout as decoded: zero when unset (Envoy's
	// 5 s), negative for an explicit 0s. Envoy waits this long between its
	// first GOAWAY and the final one; meshlet sends the final one at once,
	// so the data plane does not use it.
	DrainTimeout time.Duration

	UseRemoteAddress          bool
	XffNumTrustedHops         uint32
	SkipXffAppend             bool
	GenerateRequestID         bool // default true
	PreserveExternalRequestID bool
	// ServerName is the "server" response header value; Envoy default "envoy",
	// ours "meshlet". ServerHeaderPassThrough keeps the upstream's.
	ServerName              string
	ServerHeaderPassThrough bool
	// HTTP2MaxConcurrentStreams for downstream HTTP/2 (default 2147483647 in
	// Envoy; we use 1024 when unset).
	HTTP2MaxConcurrentStreams uint32
	// HTTPFilters lists the names of the HTTP filters meshlet runs, in
	// order, ending with envoy.filters.http.router; unknown optional filters
	// are left out and unknown required ones are rejected by the decoder.
	HTTPFilters []string
	// Filters are the HTTP filters before the router that meshlet runs, in
	// the configured order.
	Filters []*HTTPFilter
	// Path is applied to :path before routing and filters.
	Path PathNormalization
	// StripHostPort is strip_port_mode: drop the Host port before routing.
	StripHostPort StripHostPort
	// AccessLogs are written when each request ends.
	AccessLogs []*AccessLog
	// ForwardClientCert is forward_client_cert_details: what happens to
	// x-forwarded-client-cert; ClientCertDetails is
	// set_current_client_cert_details: what this hop's element carries
	// under AppendForward and SanitizeSet.
	ForwardClientCert ForwardClientCert
	ClientCertDetails ClientCertDetails
}

// ForwardClientCert mirrors HttpConnectionManager.ForwardClientCertDetails.
// "mTLS" below means the downstream presented a client certificate.
type ForwardClientCert uint8

const (
	// ForwardClientCertSanitize removes the header (Envoy's default).
	ForwardClientCertSanitize ForwardClientCert = iota
	// ForwardClientCertForwardOnly forwards it unchanged over mTLS, else
	// removes it.
	ForwardClientCertForwardOnly
	// ForwardClientCertAppendForward appends this hop's element over mTLS,
	// else removes it.
	ForwardClientCertAppendForward
	// ForwardClientCertSanitizeSet replaces it with this hop's element over
	// mTLS, else removes it.
	ForwardClientCertSanitizeSet
	// ForwardClientCertAlwaysForwardOnly forwards it unchanged always.
	ForwardClientCertAlwaysForwardOnly
)

func (f ForwardClientCert) String() string {
	switch f {
	case ForwardClientCertForwardOnly:
		return "FORWARD_ONLY"
	case ForwardClientCertAppendForward:
		return "APPEND_FORWARD"
	case ForwardClientCertSanitizeSet:
		return "SANITIZE_SET"
	case ForwardClientCertAlwaysForwardOnly:
		return "ALWAYS_FORWARD_ONLY"
	}
	return "SANITIZE"
}

// ClientCertDetails mirrors HttpConnectionManager.SetCurrentClientCertDetails:
// which fields of the client certificate this hop's XFCC element carries
// besides By and Hash, which it always has.
type ClientCertDetails struct {
	Subject bool
	Cert    bool
	Chain   bool
	URI     bool
	DNS     bool
}

// StripHostPort is the HTTP connection manager's strip_port_mode: which
// port to remove from Host/:authority before routing and forwarding.
type StripHostPort uint8

const (
	// StripHostPortNone keeps the authority as received.
	StripHostPortNone StripHostPort = iota
	// StripHostPortAny is strip_any_host_port: remove any port.
	StripHostPortAny
	// StripHostPortMatching is strip_matching_host_port: remove the port
	// only when it equals the listener's local port.
	StripHostPortMatching
)

// Defaults Envoy applies when a field is unset.
const (
	DefaultConnectTimeout      = 5 * time.Second
	DefaultRouteTimeout        = 15 * time.Second
	DefaultStreamIdleTimeout   = 5 * time.Minute
	DefaultTCPIdleTimeout      = time.Hour
	DefaultHTTPIdleTimeout     = time.Hour
	DefaultMaxRequestHeadersKB = 60
	DefaultMaxHeadersCount     = 100
	DefaultOverprovisioning    = 140 // percent
)
