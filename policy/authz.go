package policy

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/meshlet/meshlet/state"
)

// AuthzConn is what an L4 Workload API authorization decision looks at:
// one connection arriving at a workload of this node.
type AuthzConn struct {
	// SrcIdentity is the peer's SPIFFE ID ("spiffe://td/ns/NS/sa/SA"),
	// empty for a plaintext peer.
	SrcIdentity string
	Src         netip.AddrPort
	Dst         netip.AddrPort
}

// AuthzDecision is the outcome of EvalAuthz with the policy that decided
// it (nil when no policy did).
type AuthzDecision struct {
	Allowed bool
	// Policy is the DENY policy that matched, or the ALLOW policy that
	// matched; nil when allowed for lack of ALLOW policies or denied
	// because none of them matched.
	Policy *state.Authorization
}

// EvalAuthz decides a connection the way ztunnel does: any matching DENY
// policy denies; otherwise, with no ALLOW policy the connection is
// allowed, and with ALLOW policies one of them must match.
func EvalAuthz(policies []*state.Authorization, c AuthzConn) AuthzDecision {
	ns := identityNamespace(c.SrcIdentity)
	hasAllow := false
	for _, p := range policies {
		if p.Action == state.AuthzDeny && authzMatches(p, c, ns) {
			return AuthzDecision{Allowed: false, Policy: p}
		}
		if p.Action == state.AuthzAllow {
			hasAllow = true
		}
	}
	if !hasAllow {
		return AuthzDecision{Allowed: true}
	}
	for _, p := range policies {
		if p.Action == state.AuthzAllow && authzMatches(p, c, ns) {
			return AuthzDecision{Allowed: true, Policy: p}
		}
	}
	return AuthzDecision{Allowed: false}
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
func authzMatches(p *state.Authorization, c AuthzConn, ns string) bool {
	if len(p.Groups) == 0 {
		return false
	}
	for i := range p.Groups {
		if groupMatches(&p.Groups[i], c, ns) {
			return true
		}
	}
	return false
}

func groupMatches(g *state.AuthzGroup, c AuthzConn, ns string) bool {
	for i := range g.Rules {
		r := &g.Rules[i]
		if len(r.Matches) == 0 {
			continue
		}
		ok := false
		for j := range r.Matches {
			m := &r.Matches[j]
			if matchEmpty(m) {
				continue
			}
			if matchConn(m, c, ns) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

func matchEmpty(m *state.AuthzMatch) bool {
	return len(m.Namespaces) == 0 && len(m.NotNamespaces) == 0 &&
		len(m.Principals) == 0 && len(m.NotPrincipals) == 0 &&
		len(m.SourceIPs) == 0 && len(m.NotSourceIPs) == 0 &&
		len(m.DestinationIPs) == 0 && len(m.NotDestinationIPs) == 0 &&
		len(m.DestinationPorts) == 0 && len(m.NotDestinationPorts) == 0
}

// matchConn ANDs the fields set; within a field values are ORed, and a
// not_ list must match none.
func matchConn(m *state.AuthzMatch, c AuthzConn, ns string) bool {
	src, dst := c.Src.Addr().Unmap(), c.Dst.Addr().Unmap()
	inPrefix := func(a netip.Addr) func(netip.Prefix) bool {
		return func(p netip.Prefix) bool { return p.Contains(a) }
	}
	isPort := func(port uint16) bool { return port == c.Dst.Port() }
	principal := func(s state.AuthzString) bool { return principalMatch(s, c.SrcIdentity) }
	nsMatch := func(s state.AuthzString) bool { return stringMatch(s, ns) }
	return field(m.DestinationIPs, m.NotDestinationIPs, inPrefix(dst)) &&
		field(m.SourceIPs, m.NotSourceIPs, inPrefix(src)) &&
		field(m.DestinationPorts, m.NotDestinationPorts, isPort) &&
		field(m.Principals, m.NotPrincipals, principal) &&
		field(m.Namespaces, m.NotNamespaces, nsMatch)
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
