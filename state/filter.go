package state

import "time"

// Names of the HTTP filters meshlet acts on (the names Envoy documents; the
// decoder recognises a filter by its typed_config type URL, so a filter
// configured under another name still gets its config here under that
// name).
const (
	FilterRouter         = "envoy.filters.http.router"
	FilterFault          = "envoy.filters.http.fault"
	FilterLocalRateLimit = "envoy.filters.http.local_ratelimit"
)

// HTTPFilter is one entry of http_filters before the router. Exactly one of
// Fault, LocalRateLimit and RBAC is set.
type HTTPFilter struct {
	// Name keys typed_per_filter_config on virtual hosts and routes.
	Name string
	// Disabled filters run only where a virtual host or route gives them a
	// per-filter config (Envoy's HttpFilter.disabled).
	Disabled       bool
	Fault          *FaultFilter
	LocalRateLimit *LocalRateLimit
	// RBAC is set for envoy.filters.http.rbac.
	RBAC *HTTPRBAC
	// GCPAuthn is set for envoy.filters.http.gcp_authn.
	GCPAuthn *GCPAuthnFilter
}

// FilterOverride is one typed_per_filter_config entry of a virtual host or
// route: the route's entry replaces the virtual host's, which replaces the
// listener's filter config (no merging, as Envoy's fault and local rate
// limit filters do). Disabled turns the filter off there (FilterConfig
// with disabled: true).
type FilterOverride struct {
	Disabled       bool
	Fault          *FaultFilter
	LocalRateLimit *LocalRateLimit
	// RBAC is RBACPerRoute.rbac; an RBACPerRoute without rbac decodes as
	// Disabled, as Envoy then disables the filter for the route.
	RBAC *HTTPRBAC
}

// Denominator mirrors envoy.type.v3.FractionalPercent.DenominatorType as
// the number it stands for.
type Denominator uint32

const (
	PerHundred     Denominator = 100
	PerTenThousand Denominator = 10000
	PerMillion     Denominator = 1000000
)

// Fraction mirrors envoy.type.v3.FractionalPercent: Numerator out of
// Denominator. A numerator above the denominator means always.
type Fraction struct {
	Numerator   uint32
	Denominator Denominator
}

// FaultFilter mirrors envoy.extensions.filters.http.fault.v3.HTTPFault.
type FaultFilter struct {
	Delay *FaultDelay
	Abort *FaultAbort
	// UpstreamCluster limits faults to requests routed to this cluster.
	UpstreamCluster string
	// Headers must all match for a fault to be considered.
	Headers []HeaderMatcher
	// DownstreamNodes limits faults to requests whose
	// x-envoy-downstream-service-node is one of these.
	DownstreamNodes []string
	// MaxActiveFaults caps concurrently faulted requests; HasMaxActive false
	// means unlimited.
	MaxActiveFaults uint32
	HasMaxActive    bool
}

// FaultDelay mirrors envoy.extensions.filters.common.fault.v3.FaultDelay.
type FaultDelay struct {
	// Fixed is the delay; with FromHeader the delay comes from the
	// x-envoy-fault-delay-request header (milliseconds) instead.
	Fixed      time.Duration
	FromHeader bool
	Percentage Fraction
}

// FaultAbort mirrors envoy.extensions.filters.http.fault.v3.FaultAbort.
// Exactly one of HTTPStatus, HasGRPCStatus and FromHeader applies.
type FaultAbort struct {
	HTTPStatus    int
	GRPCStatus    uint32
	HasGRPCStatus bool
	// FromHeader takes the status from x-envoy-fault-abort-request or
	// x-envoy-fault-abort-grpc-request.
	FromHeader bool
	Percentage Fraction
}

// LocalRateLimit mirrors the supported part of
// envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit. Each
// distinct *LocalRateLimit (listener filter or per-route override) has its
// own token bucket in the data plane.
type LocalRateLimit struct {
	StatPrefix string
	// Bucket is nil when token_bucket is unset: the filter then limits
	// nothing.
	Bucket *TokenBucket
	// Enabled and Enforced are filter_enabled / filter_enforced default
	// values (Envoy's default for both is 0%).
	Enabled  Fraction
	Enforced Fraction
	// Status of the local reply: 429 by default.
	Status int
	// ResponseHeadersToAdd go on rate-limited replies;
	// RequestHeadersToAddWhenNotEnforced on requests that would have been
	// limited but were not enforced.
	ResponseHeadersToAdd               []HeaderValueOption
	RequestHeadersToAddWhenNotEnforced []HeaderValueOption
	// RateLimitedAsResourceExhausted answers gRPC requests with
	// RESOURCE_EXHAUSTED instead of UNAVAILABLE.
	RateLimitedAsResourceExhausted bool
}

// TokenBucket mirrors envoy.type.v3.TokenBucket.
type TokenBucket struct {
	MaxTokens     uint32
	TokensPerFill uint32 // default 1
	FillInterval  time.Duration
}

// NetworkRateLimit mirrors
// envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit: each
// new connection on the filter chain takes a token; without one the
// connection is closed at once.
type NetworkRateLimit struct {
	StatPrefix string
	Bucket     TokenBucket
}
