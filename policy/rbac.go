package policy

import (
	"crypto/x509"
	"net/netip"

	"github.com/meshlet/meshlet/state"
)

// RBACInput is what RBAC policies look at: the connection and, for the
// HTTP filter, the request.
type RBACInput struct {
	// DirectRemote is the downstream connection's peer (direct_remote_ip,
	// source_ip). Remote is the original client after x-forwarded-for
	// processing (remote_ip); when invalid DirectRemote is used.
	DirectRemote netip.AddrPort
	Remote       netip.AddrPort
	// Local is the destination the connection was made to (the original
	// destination under capture): destination_ip and destination_port.
	Local netip.AddrPort
	// ServerName is the SNI the client asked for (requested_server_name).
	ServerName string
	// TLS reports a TLS connection; Peer is the verified peer leaf
	// certificate, nil when the client sent none.
	TLS  bool
	Peer *x509.Certificate
	// Request is nil for the network filter: header and url_path rules then
	// never match, as in Envoy's network RBAC filter.
	Request Request
}

// RBACResult is the outcome of one RBACRules evaluation.
type RBACResult struct {
	// Allowed is the verdict of the rules (always true for LOG).
	Allowed bool
	// Policy is the name of the first matching policy, "" when none.
	Policy string
	// Log is set for a LOG action whose policy matched: the request should
	// be logged (Envoy's access_log_hint).
	Log bool
}

// EvalRBAC evaluates rules with Envoy's semantics: ALLOW admits iff some
// policy matches, DENY rejects iff some policy matches, LOG admits and
// marks a match for logging. A nil rules admits everything.
func EvalRBAC(rules *state.RBACRules, in *RBACInput) RBACResult {
	if rules == nil {
		return RBACResult{Allowed: true}
	}
	name, matched := "", false
	for i := range rules.Policies {
		if MatchRBACPolicy(&rules.Policies[i], in) {
			name, matched = rules.Policies[i].Name, true
			break
		}
	}
	switch rules.Action {
	case state.RBACDeny:
		return RBACResult{Allowed: !matched, Policy: name}
	case state.RBACLog:
		return RBACResult{Allowed: true, Policy: name, Log: matched}
	}
	return RBACResult{Allowed: matched, Policy: name}
}

// MatchRBACPolicy reports whether any permission and any principal match.
func MatchRBACPolicy(p *state.RBACPolicy, in *RBACInput) bool {
	ok := false
	for i := range p.Permissions {
		if matchPermission(&p.Permissions[i], in) {
			ok = true
			break
		}
	}
	if !ok {
		return false
	}
	for i := range p.Principals {
		if matchPrincipal(&p.Principals[i], in) {
			return true
		}
	}
	return false
}

func matchPermission(p *state.Permission, in *RBACInput) bool {
	switch p.Kind {
	case state.PermAny:
		return true
	case state.PermAnd:
		for i := range p.Rules {
			if !matchPermission(&p.Rules[i], in) {
				return false
			}
		}
		return true
	case state.PermOr:
		for i := range p.Rules {
			if matchPermission(&p.Rules[i], in) {
				return true
			}
		}
		return false
	case state.PermNot:
		return p.Not != nil && !matchPermission(p.Not, in)
	case state.PermHeader:
		return in.Request != nil && MatchHeader(p.Header, in.Request)
	case state.PermURLPath:
		return matchURLPath(p.String, in)
	case state.PermDestinationIP:
		return in.Local.IsValid() && p.CIDR.Contains(in.Local.Addr().Unmap())
	case state.PermDestinationPort:
		return in.Local.IsValid() && uint32(in.Local.Port()) == p.Port
	case state.PermDestinationPortRange:
		port := uint32(in.Local.Port())
		return in.Local.IsValid() && port >= p.PortStart && port < p.PortEnd
	case state.PermServerName:
		return MatchString(p.String, in.ServerName)
	}
	return false
}

func matchPrincipal(p *state.Principal, in *RBACInput) bool {
	switch p.Kind {
	case state.PrincipalAny:
		return true
	case state.PrincipalAnd:
		for i := range p.IDs {
			if !matchPrincipal(&p.IDs[i], in) {
				return false
			}
		}
		return true
	case state.PrincipalOr:
		for i := range p.IDs {
			if matchPrincipal(&p.IDs[i], in) {
				return true
			}
		}
		return false
	case state.PrincipalNot:
		return p.Not != nil && !matchPrincipal(p.Not, in)
	case state.PrincipalAuthenticated:
		return matchAuthenticated(p.Name, in)
	case state.PrincipalSourceIP, state.PrincipalDirectRemoteIP:
		return in.DirectRemote.IsValid() && p.CIDR.Contains(in.DirectRemote.Addr().Unmap())
	case state.PrincipalRemoteIP:
		r := in.Remote
		if !r.IsValid() {
			r = in.DirectRemote
		}
		return r.IsValid() && p.CIDR.Contains(r.Addr().Unmap())
	case state.PrincipalHeader:
		return in.Request != nil && MatchHeader(p.Header, in.Request)
	case state.PrincipalURLPath:
		return matchURLPath(p.Name, in)
	}
	return false
}

// matchURLPath applies a PathMatcher: the path without query and fragment
// (Envoy does not percent-decode here; normalization is the connection
// manager's job and happens before).
func matchURLPath(m *state.StringMatcher, in *RBACInput) bool {
	if in.Request == nil || m == nil {
		return false
	}
	return MatchString(m, stripQuery(in.Request.Path()))
}

// matchAuthenticated mirrors Envoy's AuthenticatedMatcher: a TLS connection
// is required; without a principal_name any TLS peer matches; otherwise the
// URI SANs are tried, then the DNS SANs, then the subject (RFC 2253 form).
func matchAuthenticated(name *state.StringMatcher, in *RBACInput) bool {
	if !in.TLS {
		return false
	}
	if name == nil {
		return true
	}
	c := in.Peer
	if c == nil {
		return MatchString(name, "")
	}
	for _, u := range c.URIs {
		if MatchString(name, u.String()) {
			return true
		}
	}
	for _, d := range c.DNSNames {
		if MatchString(name, d) {
			return true
		}
	}
	return MatchString(name, c.Subject.String())
}

// PeerPrincipal returns the identity Envoy's authenticated principal and
// Istio's source.principal report for a certificate: its first URI SAN,
// else its first DNS SAN, else the subject.
func PeerPrincipal(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return c.Subject.String()
}
