package state

import "net/netip"

// AuthzScope says which workloads an Authorization applies to.
type AuthzScope uint8

const (
	// AuthzGlobal applies to every workload in the mesh.
	AuthzGlobal AuthzScope = iota
	// AuthzNamespace applies to the workloads of the policy's namespace.
	AuthzNamespace
	// AuthzWorkloadSelector applies to the workloads listing the policy in
	// Workload.AuthorizationPolicies.
	AuthzWorkloadSelector
)

func (s AuthzScope) String() string {
	return [...]string{"GLOBAL", "NAMESPACE", "WORKLOAD_SELECTOR"}[s]
}

// AuthzAction is what a matching Authorization does.
type AuthzAction uint8

const (
	AuthzAllow AuthzAction = iota
	AuthzDeny
)

func (a AuthzAction) String() string {
	if a == AuthzDeny {
		return "DENY"
	}
	return "ALLOW"
}

// Authorization is an L4 istio.security.Authorization policy, keyed by
// "namespace/name". It matches when any group matches; a group matches
// when all its rules do; a rule matches when any of its matches does.
type Authorization struct {
	Name      string
	Namespace string
	Scope     AuthzScope
	Action    AuthzAction
	Groups    []AuthzGroup
}

// Key is the policy's xDS name.
func (a *Authorization) Key() string { return a.Namespace + "/" + a.Name }

// AuthzGroup is one OR-ed alternative of a policy; its rules are AND-ed.
type AuthzGroup struct {
	Rules []AuthzRule
}

// AuthzRule holds OR-ed matches.
type AuthzRule struct {
	Matches []AuthzMatch
}

// AuthzMatch is one match: values of one field are OR-ed, the fields set
// are AND-ed, and a not_ field excludes what it lists.
type AuthzMatch struct {
	Namespaces          []AuthzString
	NotNamespaces       []AuthzString
	Principals          []AuthzString
	NotPrincipals       []AuthzString
	SourceIPs           []netip.Prefix
	NotSourceIPs        []netip.Prefix
	DestinationIPs      []netip.Prefix
	NotDestinationIPs   []netip.Prefix
	DestinationPorts    []uint16
	NotDestinationPorts []uint16

	// L7 matches, a meshlet extension of the Workload API (Match fields
	// 1001-1006): they need the HTTP request, so a node proxy terminates
	// HTTP on inbound connections whose decision depends on them.
	Paths      []AuthzString
	NotPaths   []AuthzString
	Methods    []AuthzString
	NotMethods []AuthzString
	Hosts      []AuthzString
	NotHosts   []AuthzString

	// UnknownFields are the protobuf field numbers of the match this proxy
	// does not decode: conditions of a newer Workload API (Istio's
	// service_accounts, for one). They fail closed: through an ALLOW
	// policy such a match never matches; in a DENY policy the unknown
	// conditions count as met, so it denies at least what was meant.
	UnknownFields []int32
}

// HasL7 reports whether the match looks at the HTTP request.
func (m *AuthzMatch) HasL7() bool {
	return len(m.Paths) > 0 || len(m.NotPaths) > 0 || len(m.Methods) > 0 ||
		len(m.NotMethods) > 0 || len(m.Hosts) > 0 || len(m.NotHosts) > 0
}

// HasL7 reports whether any match of the policy looks at the HTTP request.
func (a *Authorization) HasL7() bool {
	for i := range a.Groups {
		for j := range a.Groups[i].Rules {
			for k := range a.Groups[i].Rules[j].Matches {
				if a.Groups[i].Rules[j].Matches[k].HasL7() {
					return true
				}
			}
		}
	}
	return false
}

// AuthzStringKind selects how an AuthzString compares.
type AuthzStringKind uint8

const (
	AuthzExact AuthzStringKind = iota
	AuthzPrefix
	AuthzSuffix
	// AuthzPresence matches any non-empty value.
	AuthzPresence
)

// AuthzString is Istio's StringMatch (exact, prefix, suffix or presence).
type AuthzString struct {
	Kind  AuthzStringKind
	Value string
}

func (k AuthzStringKind) String() string {
	return [...]string{"exact", "prefix", "suffix", "presence"}[k]
}

// MarshalText methods make dumps (admin /config_dump) show enum names.

func (s AuthzScope) MarshalText() ([]byte, error)      { return []byte(s.String()), nil }
func (a AuthzAction) MarshalText() ([]byte, error)     { return []byte(a.String()), nil }
func (k AuthzStringKind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }
