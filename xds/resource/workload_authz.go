package resource

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds/istiopb/securitypb"
)

func decodeAuthorizationAny(raw *anypb.Any) (string, any, error) {
	var m securitypb.Authorization
	if err := proto.Unmarshal(raw.GetValue(), &m); err != nil {
		return "", nil, fmt.Errorf("authorization: %w", err)
	}
	a, err := DecodeAuthorization(&m)
	return m.GetNamespace() + "/" + m.GetName(), nilIfErr(a, err), err
}

// DecodeAuthorization validates an istio.security.Authorization. Errors
// read `authorization "ns/name": groups[0].rules[1].matches[0].source_ips[0]: ...`.
func DecodeAuthorization(m *securitypb.Authorization) (*state.Authorization, error) {
	a, err := decodeAuthorization(m)
	if err != nil {
		return nil, fmt.Errorf("authorization %q: %w", m.GetNamespace()+"/"+m.GetName(), err)
	}
	return a, nil
}

func decodeAuthorization(m *securitypb.Authorization) (*state.Authorization, error) {
	if m.GetName() == "" {
		return nil, errAt("name", "is required")
	}
	a := &state.Authorization{Name: m.GetName(), Namespace: m.GetNamespace()}
	switch m.GetScope() {
	case securitypb.Scope_GLOBAL:
		a.Scope = state.AuthzGlobal
	case securitypb.Scope_NAMESPACE:
		a.Scope = state.AuthzNamespace
		if a.Namespace == "" {
			return nil, errAt("namespace", "is required with scope NAMESPACE")
		}
	case securitypb.Scope_WORKLOAD_SELECTOR:
		a.Scope = state.AuthzWorkloadSelector
	default:
		// Which workloads a newer scope covers cannot be guessed: reading
		// it as any known one could drop a DENY or widen an ALLOW.
		return nil, errAt("scope", "unknown value %d", m.GetScope())
	}
	switch m.GetAction() {
	case securitypb.Action_ALLOW:
		a.Action = state.AuthzAllow
	case securitypb.Action_DENY:
		a.Action = state.AuthzDeny
	default:
		// An action we do not know could be stricter than ALLOW: reject
		// rather than guess.
		return nil, errAt("action", "unknown value %d", m.GetAction())
	}
	for gi, g := range m.GetGroups() {
		var group state.AuthzGroup
		for ri, r := range g.GetRules() {
			var rule state.AuthzRule
			for mi, mm := range r.GetMatches() {
				match, err := decodeAuthzMatch(mm)
				if err != nil {
					return nil, atIndex("groups", gi, atIndex("rules", ri, atIndex("matches", mi, err)))
				}
				rule.Matches = append(rule.Matches, match)
			}
			group.Rules = append(group.Rules, rule)
		}
		a.Groups = append(a.Groups, group)
	}
	return a, nil
}

func decodeAuthzMatch(m *securitypb.Match) (state.AuthzMatch, error) {
	var out state.AuthzMatch
	var err error
	strs := []struct {
		name string
		in   []*securitypb.StringMatch
		out  *[]state.AuthzString
	}{
		{"namespaces", m.GetNamespaces(), &out.Namespaces},
		{"not_namespaces", m.GetNotNamespaces(), &out.NotNamespaces},
		{"principals", m.GetPrincipals(), &out.Principals},
		{"not_principals", m.GetNotPrincipals(), &out.NotPrincipals},
	}
	for _, s := range strs {
		if *s.out, err = decodeAuthzStrings(s.name, s.in); err != nil {
			return out, err
		}
	}
	cidrs := []struct {
		name string
		in   []*securitypb.Address
		out  *[]netip.Prefix
	}{
		{"source_ips", m.GetSourceIps(), &out.SourceIPs},
		{"not_source_ips", m.GetNotSourceIps(), &out.NotSourceIPs},
		{"destination_ips", m.GetDestinationIps(), &out.DestinationIPs},
		{"not_destination_ips", m.GetNotDestinationIps(), &out.NotDestinationIPs},
	}
	for _, c := range cidrs {
		for i, a := range c.in {
			ip, err := ipFromBytes(a.GetAddress())
			if err != nil {
				return out, atIndex(c.name, i, at("address", err))
			}
			if int(a.GetLength()) > ip.BitLen() {
				return out, atIndex(c.name, i, errAt("length", "%d exceeds %d bits", a.GetLength(), ip.BitLen()))
			}
			p := netip.PrefixFrom(ip, int(a.GetLength())).Masked()
			*c.out = append(*c.out, p)
		}
	}
	l7 := []struct {
		name string
		in   []string
		out  *[]state.AuthzString
	}{
		{"paths", m.GetPaths(), &out.Paths},
		{"not_paths", m.GetNotPaths(), &out.NotPaths},
		{"methods", m.GetMethods(), &out.Methods},
		{"not_methods", m.GetNotMethods(), &out.NotMethods},
		{"hosts", m.GetHosts(), &out.Hosts},
		{"not_hosts", m.GetNotHosts(), &out.NotHosts},
	}
	for _, f := range l7 {
		for i, v := range f.in {
			s, err := decodeAuthzPattern(v)
			if err != nil {
				return out, atIndex(f.name, i, err)
			}
			*f.out = append(*f.out, s)
		}
	}
	ports := []struct {
		name string
		in   []uint32
		out  *[]uint16
	}{
		{"destination_ports", m.GetDestinationPorts(), &out.DestinationPorts},
		{"not_destination_ports", m.GetNotDestinationPorts(), &out.NotDestinationPorts},
	}
	for _, p := range ports {
		for i, v := range p.in {
			if v > 65535 {
				return out, errAt(fmt.Sprintf("%s[%d]", p.name, i), "%d is not a port", v)
			}
			*p.out = append(*p.out, uint16(v))
		}
	}
	unknown, err := unknownFieldNumbers(m.ProtoReflect().GetUnknown())
	if err != nil {
		return out, err
	}
	out.UnknownFields = unknown
	return out, nil
}

// unknownFieldNumbers lists the distinct field numbers in a message's
// unknown bytes: fields a newer control plane sends that our copy of the
// proto does not have.
func unknownFieldNumbers(b []byte) ([]int32, error) {
	var out []int32
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, fmt.Errorf("unknown fields: %w", protowire.ParseError(n))
		}
		b = b[n:]
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return nil, fmt.Errorf("unknown field %d: %w", num, protowire.ParseError(n))
		}
		b = b[n:]
		if !slices.Contains(out, int32(num)) {
			out = append(out, int32(num))
		}
	}
	return out, nil
}

func decodeAuthzStrings(field string, in []*securitypb.StringMatch) ([]state.AuthzString, error) {
	var out []state.AuthzString
	for i, s := range in {
		switch t := s.GetMatchType().(type) {
		case *securitypb.StringMatch_Exact:
			out = append(out, state.AuthzString{Kind: state.AuthzExact, Value: t.Exact})
		case *securitypb.StringMatch_Prefix:
			out = append(out, state.AuthzString{Kind: state.AuthzPrefix, Value: t.Prefix})
		case *securitypb.StringMatch_Suffix:
			out = append(out, state.AuthzString{Kind: state.AuthzSuffix, Value: t.Suffix})
		case *securitypb.StringMatch_Presence:
			out = append(out, state.AuthzString{Kind: state.AuthzPresence})
		default:
			return nil, errAt(fmt.Sprintf("%s[%d]", field, i), "match_type is required")
		}
	}
	return out, nil
}

// decodeAuthzPattern reads AuthorizationPolicy's string syntax used by the
// meshlet L7 extension fields: "*" any non-empty value, "x*" prefix, "*x"
// suffix, otherwise exact. An empty string or a "*" inside the value is
// refused: it could only be a mistake, and guessing could widen a policy.
func decodeAuthzPattern(v string) (state.AuthzString, error) {
	switch {
	case v == "":
		return state.AuthzString{}, errAt("", "is empty")
	case v == "*":
		return state.AuthzString{Kind: state.AuthzPresence}, nil
	case strings.HasSuffix(v, "*") && !strings.Contains(v[:len(v)-1], "*"):
		return state.AuthzString{Kind: state.AuthzPrefix, Value: v[:len(v)-1]}, nil
	case strings.HasPrefix(v, "*") && !strings.Contains(v[1:], "*"):
		return state.AuthzString{Kind: state.AuthzSuffix, Value: v[1:]}, nil
	case strings.Contains(v, "*"):
		return state.AuthzString{}, errAt("", "%q: '*' only at the start or the end", v)
	}
	return state.AuthzString{Kind: state.AuthzExact, Value: v}, nil
}
