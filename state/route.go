package state

import (
	"regexp"
	"time"
)

// RouteConfig mirrors envoy.config.route.v3.RouteConfiguration.
type RouteConfig struct {
	Name         string
	VirtualHosts []*VirtualHost
	Headers      HeaderMutation // route-config level (applied last, lowest precedence)
	// FilterOverrides is typed_per_filter_config by HTTP filter name, the
	// least specific level (below the virtual host's).
	FilterOverrides map[string]*FilterOverride
	// IgnorePortInHostMatching matches virtual host domains against the
	// authority without its port (route configuration
	// ignore_port_in_host_matching). Otherwise, as in Envoy, "a.b:8080"
	// matches only a domain "a.b:8080" (or a wildcard that covers it).
	IgnorePortInHostMatching bool
	// MaxDirectResponseBodyBytes: Envoy default 4096.
	MaxDirectResponseBodyBytes uint32
	// InternalOnlyHeaders (internal_only_headers) are removed from requests
	// of external clients (downstream address not RFC 1918, loopback or
	// ULA) before routing and filters. Names are lower-case;
	// InternalOnlyHeaderKeys holds the same names in net/http's canonical
	// form, for the HTTP/2 and in-process paths.
	InternalOnlyHeaders    []string
	InternalOnlyHeaderKeys []string
}

// HeaderMutation is request/response headers to add and remove at one level
// (route configuration, virtual host, route or weighted cluster).
type HeaderMutation struct {
	RequestAdd     []HeaderValueOption
	RequestRemove  []string // lower-case names
	ResponseAdd    []HeaderValueOption
	ResponseRemove []string // lower-case names
}

// Empty reports whether m changes nothing.
func (m *HeaderMutation) Empty() bool {
	return len(m.RequestAdd) == 0 && len(m.RequestRemove) == 0 &&
		len(m.ResponseAdd) == 0 && len(m.ResponseRemove) == 0
}

// AppendAction mirrors HeaderValueOption.HeaderAppendAction.
type AppendAction int

const (
	AppendIfExistsOrAdd AppendAction = iota
	AddIfAbsent
	OverwriteIfExistsOrAdd
	OverwriteIfExists
)

// HeaderValueOption is one header to add. Key is lower-case. Value may hold
// Envoy's %VAR% formatters for the few we support (%DOWNSTREAM_REMOTE_ADDRESS%,
// %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%, %UPSTREAM_REMOTE_ADDRESS%,
// %PROTOCOL%, %HOSTNAME%); others are left literal.
type HeaderValueOption struct {
	Key    string
	Value  string
	Action AppendAction
	// KeepEmptyValue: when false, a header whose value formats to "" is not
	// added.
	KeepEmptyValue bool
}

// VirtualHost mirrors envoy.config.route.v3.VirtualHost.
type VirtualHost struct {
	Name string
	// Domains as configured, lower-cased: exact ("a.b"), suffix wildcard
	// ("*.b"), prefix wildcard ("a.*"), or "*". A domain may carry a port
	// ("a.b:80"), in which case it matches only the Host header with that
	// port.
	Domains []string
	Routes  []*Route
	Headers HeaderMutation
	// FilterOverrides is typed_per_filter_config by HTTP filter name.
	FilterOverrides map[string]*FilterOverride
	// RetryPolicy applies to routes without their own (nil: no retries).
	RetryPolicy *RetryPolicy
	// IncludeAttemptCount adds x-envoy-attempt-count to upstream requests;
	// IncludeAttemptCountInResponse to downstream responses.
	IncludeAttemptCount           bool
	IncludeAttemptCountInResponse bool
}

// Route mirrors envoy.config.route.v3.Route. Exactly one of Action,
// Redirect and DirectResponse is set (NonForwarding routes are rejected by
// the decoder).
type Route struct {
	Name           string
	Match          RouteMatch
	Action         *RouteAction
	Redirect       *RedirectAction
	DirectResponse *DirectResponseAction
	Headers        HeaderMutation
	// FilterOverrides is typed_per_filter_config by HTTP filter name.
	FilterOverrides map[string]*FilterOverride
}

// PathMatchKind says how RouteMatch.Path is compared.
type PathMatchKind int

const (
	PathPrefix PathMatchKind = iota
	PathExact
	PathRegex
	PathSeparatedPrefix
)

// RouteMatch mirrors envoy.config.route.v3.RouteMatch.
type RouteMatch struct {
	Kind PathMatchKind
	// Path is the prefix / exact path / separated prefix (empty for regex).
	Path string
	// Regex is compiled with Go's RE2 engine and matched against the whole
	// path without the query string (anchored: Envoy's safe_regex must match
	// the full path).
	Regex *regexp.Regexp
	// CaseSensitive defaults to true; applies to prefix/path matching only.
	CaseSensitive bool
	Headers       []HeaderMatcher
	QueryParams   []QueryParamMatcher
	// GRPC restricts the route to requests with content-type application/grpc*.
	GRPC bool
}

// StringMatchKind mirrors type.matcher.v3.StringMatcher's oneof.
type StringMatchKind int

const (
	StringExact StringMatchKind = iota
	StringPrefix
	StringSuffix
	StringContains
	StringRegex
)

// StringMatcher mirrors envoy.type.matcher.v3.StringMatcher.
type StringMatcher struct {
	Kind       StringMatchKind
	Value      string
	Regex      *regexp.Regexp // StringRegex only; anchored full match
	IgnoreCase bool
}

// HeaderMatchKind mirrors HeaderMatcher's header_match_specifier oneof.
type HeaderMatchKind int

const (
	HeaderExact HeaderMatchKind = iota
	HeaderRegex
	HeaderRange
	HeaderPresent
	HeaderPrefix
	HeaderSuffix
	HeaderContains
	HeaderString // string_match
)

// HeaderMatcher mirrors envoy.config.route.v3.HeaderMatcher. Name is
// lower-case; ":authority", ":path", ":method", ":scheme" address the pseudo
// headers (HTTP/1.1 Host maps to ":authority"). A header with several values
// is matched against the values joined with ",".
type HeaderMatcher struct {
	Name string
	Kind HeaderMatchKind
	// Exact/Prefix/Suffix/Contains value, or the StringMatcher for
	// HeaderString (the deprecated forms are decoded into String too).
	String StringMatcher
	// Range: [Start, End) on the value parsed as a signed integer.
	RangeStart, RangeEnd int64
	// Present: the header must be present (true) or absent (false).
	Present bool
	Invert  bool
	// TreatMissingAsEmpty matches a missing header as "".
	TreatMissingAsEmpty bool
}

// QueryParamMatcher mirrors envoy.config.route.v3.QueryParameterMatcher.
type QueryParamMatcher struct {
	Name string
	// String is nil for present_match.
	String  *StringMatcher
	Present bool
}

// RouteAction mirrors the supported part of envoy.config.route.v3.RouteAction.
// Exactly one of Cluster, WeightedClusters and ClusterHeader is set.
type RouteAction struct {
	Cluster          string
	WeightedClusters []WeightedCluster
	// TotalWeight is the sum of WeightedClusters weights.
	TotalWeight   uint64
	ClusterHeader string // lower-case header name

	// ClusterNotFoundCode: 503 (default) or 404.
	ClusterNotFoundCode int

	PrefixRewrite      string
	RegexRewrite       *regexp.Regexp
	RegexSubstitution  string // Go regexp.Expand template (\1 converted to ${1})
	HostRewriteLiteral string
	AutoHostRewrite    bool
	HostRewriteHeader  string

	// Timeout: default 15s, zero means none.
	Timeout     time.Duration
	IdleTimeout time.Duration
	// MaxStreamDuration / GrpcTimeoutHeaderMax / Offset (gRFC A31) are
	// decoded now and enforced with the timeout work.
	MaxStreamDuration        time.Duration
	GrpcTimeoutHeaderMax     *time.Duration
	GrpcTimeoutHeaderOffset  time.Duration
	HashPolicies             []HashPolicy
	UpgradeWebSocketDisabled bool
	// MaxStreamDurationSet: the max_stream_duration message is present;
	// Envoy then ignores Timeout and applies the stream duration instead.
	MaxStreamDurationSet bool
	// RetryPolicy is the route's own policy (nil: the virtual host's).
	RetryPolicy *RetryPolicy
	// MirrorPolicies are request_mirror_policies.
	MirrorPolicies []MirrorPolicy
}

// WeightedCluster is one entry of weighted_clusters (also used by tcp_proxy).
type WeightedCluster struct {
	Name    string
	Weight  uint32
	Headers HeaderMutation
	// FilterOverrides is the entry's typed_per_filter_config by HTTP
	// filter name; it wins over the route's (HTTP routes only).
	FilterOverrides map[string]*FilterOverride
}

// HashPolicyKind mirrors RouteAction.HashPolicy's oneof.
type HashPolicyKind int

const (
	HashHeader HashPolicyKind = iota
	HashCookie
	HashSourceIP
	HashQueryParam
	HashFilterState
)

// HashPolicy mirrors envoy.config.route.v3.RouteAction.HashPolicy.
type HashPolicy struct {
	Kind     HashPolicyKind
	Name     string // header (lower-case), cookie or query parameter name
	Terminal bool
	// Cookie: when TTL is set and the cookie is missing, Envoy generates one;
	// we hash the source instead and set the cookie on the response.
	CookieTTL  time.Duration
	CookiePath string
	// Header regex_rewrite is not supported.
}

// RedirectAction mirrors envoy.config.route.v3.RedirectAction.
type RedirectAction struct {
	SchemeRedirect string // "https" for https_redirect
	HostRedirect   string
	PortRedirect   uint32
	PathRedirect   string
	PrefixRewrite  string
	// RegexRewrite applies to the path like RouteAction.RegexRewrite.
	RegexRewrite      *regexp.Regexp
	RegexSubstitution string
	// ResponseCode: 301 (default), 302, 303, 307, 308.
	ResponseCode int
	StripQuery   bool
}

// DirectResponseAction mirrors envoy.config.route.v3.DirectResponseAction.
type DirectResponseAction struct {
	Status int
	Body   []byte
}
