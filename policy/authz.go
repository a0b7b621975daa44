package policy

import (
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/meshlet/meshlet/state"
)

// AuthzConn is what a Workload API authorization decision looks at: one
// connection arriving at a workload of this node, and, once HTTP is
// terminated, one request on it.
type AuthzConn struct {
	// SrcIdentity is the peer's SPIFFE ID ("spiffe://td/ns/NS/sa/SA"),
	// empty for a plaintext peer.
	SrcIdentity string
	Src         netip.AddrPort
	Dst         netip.AddrPort
	// HTTP is the request when evaluating per request; nil at connection
	// time, when L7 matches (the meshlet extension) cannot be decided.
	HTTP *AuthzRequest
}

// AuthzRequest is the part of an HTTP request L7 matches look at.
type AuthzRequest struct {
	Method string
	// Path is the normalized path without the query.
	Path string
	// Host is the request's authority (Host header), port included if
	// sent.
	Host string
}

// AuthzDecision is the outcome of EvalAuthz with the policy that decided
// it (nil when no policy did).
type AuthzDecision struct {
	Allowed bool
	// NeedsHTTP: the decision depends on L7 matches and AuthzConn.HTTP was
	// nil. Allowed is false then; the caller terminates HTTP and evaluates
	// each request (or refuses the connection).
	NeedsHTTP bool
	// Policy is the DENY policy that matched, or the ALLOW policy that
	// matched; nil when allowed for lack of ALLOW policies or denied
	// because none of them matched.
	Policy *state.Authorization
}

// tri is a three-valued match result: at connection time an L7 match is
// unknown, and the decision is only final when it does not depend on one.
type tri uint8

const (
	triNo tri = iota
	triYes
	triUnknown
)

// EvalAuthz decides a connection the way ztunnel does: any matching DENY
// policy denies; otherwise, with no ALLOW policy the connection is
// allowed, and with ALLOW policies one of them must match. Without
// c.HTTP, a decision that an L7 match could change is reported as
// NeedsHTTP instead.
func EvalAuthz(policies []*state.Authorization, c AuthzConn) AuthzDecision {
	ns := identityNamespace(c.SrcIdentity)
	hasAllow, denyUnknown := false, false
	for _, p := range policies {
		switch p.Action {
		case state.AuthzDeny:
			switch authzMatches(p, c, ns) {
			case triYes:
				return AuthzDecision{Allowed: false, Policy: p}
			case triUnknown:
				denyUnknown = true
			}
		case state.AuthzAllow:
			hasAllow = true
		}
	}
	allow, allowUnknown := (*state.Authorization)(nil), false
	if hasAllow {
		for _, p := range policies {
			if p.Action != state.AuthzAllow {
				continue
			}
			switch authzMatches(p, c, ns) {
			case triYes:
				allow = p
			case triUnknown:
				allowUnknown = true
			}
			if allow != nil {
				break
			}
		}
		if allow == nil && !allowUnknown {
			return AuthzDecision{Allowed: false}
		}
	}
	if denyUnknown || (allow == nil && allowUnknown) {
		return AuthzDecision{NeedsHTTP: true}
	}
	return AuthzDecision{Allowed: true, Policy: allow}
}

// identityNamespace extracts NS from spiffe://TD/ns/NS/sa/SA; "" when the
// identity is absent or not in Istio's form.
func identityNamespace(id string) string {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return ""
	}
	_, path, _ := strings.Cut(rest, "/")
	seg := strings.Split(path, "/")
	if len(seg) != 4 || seg[0] != "ns" || seg[2] != "sa" {
		return ""
	}
	return seg[1]
}

// authzMatches: a policy with no groups matches nothing; a group matches
// when every rule does; a rule with no matches matches; otherwise one of
// its non-empty matches must. (An empty match is ignored rather than
// matching everything, so a policy stripped of unsupported fields never
// widens.)
func authzMatches(p *state.Authorization, c AuthzConn, ns string) tri {
	out := triNo
	for i := range p.Groups {
		switch groupMatches(&p.Groups[i], p.Action, c, ns) {
		case triYes:
			return triYes
		case triUnknown:
			out = triUnknown
		}
	}
	return out
}

func groupMatches(g *state.AuthzGroup, action state.AuthzAction, c AuthzConn, ns string) tri {
	out := triYes
	for i := range g.Rules {
		r := &g.Rules[i]
		if len(r.Matches) == 0 {
			continue
		}
		rule := triNo
		for j := range r.Matches {
			m := &r.Matches[j]
			if matchEmpty(m) {
				continue
			}
			if len(m.UnknownFields) > 0 && action == state.AuthzAllow {
				// Conditions we cannot evaluate must not allow; a DENY
				// evaluates the rest (the unknown ones count as met).
				continue
			}
			v := matchConn(m, c, ns)
			if v == triYes {
				rule = triYes
				break
			}
			if v == triUnknown {
				rule = triUnknown
			}
		}
		switch rule {
		case triNo:
			return triNo
		case triUnknown:
			out = triUnknown
		}
	}
	return out
}

func matchEmpty(m *state.AuthzMatch) bool {
	return len(m.Namespaces) == 0 && len(m.NotNamespaces) == 0 &&
		len(m.Principals) == 0 && len(m.NotPrincipals) == 0 &&
		len(m.SourceIPs) == 0 && len(m.NotSourceIPs) == 0 &&
		len(m.DestinationIPs) == 0 && len(m.NotDestinationIPs) == 0 &&
		len(m.DestinationPorts) == 0 && len(m.NotDestinationPorts) == 0 &&
		!m.HasL7() && len(m.UnknownFields) == 0
}

// matchConn ANDs the fields set; within a field values are ORed, and a
// not_ list must match none. L7 fields are unknown without c.HTTP.
func matchConn(m *state.AuthzMatch, c AuthzConn, ns string) tri {
	src, dst := c.Src.Addr().Unmap(), c.Dst.Addr().Unmap()
	inPrefix := func(a netip.Addr) func(netip.Prefix) bool {
		return func(p netip.Prefix) bool { return p.Contains(a) }
	}
	isPort := func(port uint16) bool { return port == c.Dst.Port() }
	principal := func(s state.AuthzString) bool { return principalMatch(s, c.SrcIdentity) }
	nsMatch := func(s state.AuthzString) bool { return stringMatch(s, ns) }
	l4 := field(m.DestinationIPs, m.NotDestinationIPs, inPrefix(dst)) &&
		field(m.SourceIPs, m.NotSourceIPs, inPrefix(src)) &&
		field(m.DestinationPorts, m.NotDestinationPorts, isPort) &&
		field(m.Principals, m.NotPrincipals, principal) &&
		field(m.Namespaces, m.NotNamespaces, nsMatch)
	if !l4 {
		return triNo
	}
	if !m.HasL7() {
		return triYes
	}
	h := c.HTTP
	if h == nil {
		return triUnknown
	}
	method := func(s state.AuthzString) bool { return stringMatch(s, h.Method) }
	path := func(s state.AuthzString) bool { return stringMatch(s, h.Path) }
	host := func(s state.AuthzString) bool { return hostMatch(s, h.Host) }
	if field(m.Methods, m.NotMethods, method) &&
		field(m.Paths, m.NotPaths, path) &&
		field(m.Hosts, m.NotHosts, host) {
		return triYes
	}
	return triNo
}

// hostMatch compares case-insensitively with the authority as sent and
// without its port, so "example.com" matches "Example.com:8080".
func hostMatch(s state.AuthzString, host string) bool {
	s.Value = strings.ToLower(s.Value)
	host = strings.ToLower(host)
	if stringMatch(s, host) {
		return true
	}
	if h, _, err := net.SplitHostPort(host); err == nil {
		return stringMatch(s, strings.Trim(h, "[]"))
	}
	return false
}

func field[T any](pos, neg []T, pred func(T) bool) bool {
	if len(pos) > 0 && !slices.ContainsFunc(pos, pred) {
		return false
	}
	return !slices.ContainsFunc(neg, pred)
}

// principalMatch compares against the identity without "spiffe://":
// Istio writes principals as "td/ns/NS/sa/SA", prefixes and suffixes
// included. A connection without a SPIFFE identity matches no principal.
func principalMatch(s state.AuthzString, id string) bool {
	rest, ok := strings.CutPrefix(id, "spiffe://")
	if !ok {
		return false
	}
	return stringMatch(s, rest)
}

func stringMatch(s state.AuthzString, v string) bool {
	switch s.Kind {
	case state.AuthzPrefix:
		return strings.HasPrefix(v, s.Value)
	case state.AuthzSuffix:
		return strings.HasSuffix(v, s.Value)
	case state.AuthzPresence:
		return v != ""
	default:
		return v == s.Value
	}
}
