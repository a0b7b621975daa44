package state

import "net/netip"

// Names of the RBAC filters (Envoy's documented names).
const (
	FilterRBAC        = "envoy.filters.http.rbac"
	NetworkFilterRBAC = "envoy.filters.network.rbac"
)

// RBACAction mirrors envoy.config.rbac.v3.RBAC.Action.
type RBACAction int

const (
	// RBACAllow admits a request or connection only if some policy matches.
	RBACAllow RBACAction = iota
	// RBACDeny rejects a request or connection if some policy matches.
	RBACDeny
	// RBACLog admits everything and marks what a policy matches for logging.
	RBACLog
)

func (a RBACAction) String() string {
	switch a {
	case RBACDeny:
		return "DENY"
	case RBACLog:
		return "LOG"
	}
	return "ALLOW"
}

// RBACRules mirrors envoy.config.rbac.v3.RBAC. Policies are sorted by name:
// Envoy keeps them in an ordered map, so the first matching policy (the one
// reported as "matched policy") is the lexically smallest name.
type RBACRules struct {
	Action   RBACAction
	Policies []RBACPolicy
}

// RBACPolicy mirrors envoy.config.rbac.v3.Policy: it matches when any
// permission and any principal match.
type RBACPolicy struct {
	Name        string
	Permissions []Permission
	Principals  []Principal
}

// PermissionKind mirrors Permission's rule oneof.
type PermissionKind int

const (
	PermAny PermissionKind = iota
	PermAnd
	PermOr
	PermNot
	PermHeader
	PermURLPath
	PermDestinationIP
	PermDestinationPort
	PermDestinationPortRange
	PermServerName
)

// Permission mirrors envoy.config.rbac.v3.Permission (the supported rules).
type Permission struct {
	Kind PermissionKind
	// Rules of PermAnd / PermOr.
	Rules []Permission
	// Not is the negated rule of PermNot.
	Not *Permission
	// Header is PermHeader's matcher.
	Header *HeaderMatcher
	// String is PermURLPath's path matcher (applied to :path without query
	// and fragment) and PermServerName's SNI matcher.
	String *StringMatcher
	// CIDR of PermDestinationIP.
	CIDR netip.Prefix
	// Port of PermDestinationPort; [PortStart, PortEnd) of
	// PermDestinationPortRange.
	Port               uint32
	PortStart, PortEnd uint32
}

// PrincipalKind mirrors Principal's identifier oneof.
type PrincipalKind int

const (
	PrincipalAny PrincipalKind = iota
	PrincipalAnd
	PrincipalOr
	PrincipalNot
	PrincipalAuthenticated
	// PrincipalSourceIP is the deprecated source_ip: the downstream
	// connection's peer, like direct_remote_ip.
	PrincipalSourceIP
	PrincipalDirectRemoteIP
	// PrincipalRemoteIP is the original client after x-forwarded-for
	// processing (the connection peer at L4).
	PrincipalRemoteIP
	PrincipalHeader
	PrincipalURLPath
)

// Principal mirrors envoy.config.rbac.v3.Principal (the supported
// identifiers).
type Principal struct {
	Kind PrincipalKind
	// IDs of PrincipalAnd / PrincipalOr.
	IDs []Principal
	// Not is the negated identifier of PrincipalNot.
	Not *Principal
	// Name is Authenticated.principal_name, matched against the peer
	// certificate's URI SANs, then DNS SANs, then subject. Nil matches any
	// TLS peer. It is also PrincipalURLPath's path matcher.
	Name *StringMatcher
	// CIDR of the IP identifiers.
	CIDR   netip.Prefix
	Header *HeaderMatcher
}

// HTTPRBAC mirrors envoy.extensions.filters.http.rbac.v3.RBAC. Rules nil
// enforces nothing; ShadowRules are evaluated and counted but never
// enforced.
type HTTPRBAC struct {
	Rules                 *RBACRules
	RulesStatPrefix       string
	ShadowRules           *RBACRules
	ShadowRulesStatPrefix string
}

// NetworkRBAC mirrors envoy.extensions.filters.network.rbac.v3.RBAC.
type NetworkRBAC struct {
	StatPrefix  string
	Rules       *RBACRules
	ShadowRules *RBACRules
	// Continuous (enforcement_type CONTINUOUS) is recorded; meshlet checks
	// a connection when it is established and again whenever the policy
	// changes, for both enforcement types.
	Continuous bool
}

// EscapedSlashesAction mirrors
// HttpConnectionManager.PathWithEscapedSlashesAction (the
// IMPLEMENTATION_SPECIFIC_DEFAULT is decoded as KeepEscapedSlashes, Envoy's
// default).
type EscapedSlashesAction int

const (
	KeepEscapedSlashes EscapedSlashesAction = iota
	RejectEscapedSlashes
	UnescapeAndRedirect
	UnescapeAndForward
)

func (a EscapedSlashesAction) String() string {
	switch a {
	case RejectEscapedSlashes:
		return "REJECT_REQUEST"
	case UnescapeAndRedirect:
		return "UNESCAPE_AND_REDIRECT"
	case UnescapeAndForward:
		return "UNESCAPE_AND_FORWARD"
	}
	return "KEEP_UNCHANGED"
}

// PathNormalization is the HTTP connection manager's path handling applied
// before routing and filters (normalize_path, merge_slashes,
// path_with_escaped_slashes_action).
type PathNormalization struct {
	NormalizePath  bool
	MergeSlashes   bool
	EscapedSlashes EscapedSlashesAction
}

// Enabled reports whether any path transformation is configured.
func (p PathNormalization) Enabled() bool {
	return p.NormalizePath || p.MergeSlashes || p.EscapedSlashes != KeepEscapedSlashes
}
