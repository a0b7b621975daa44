package policy

import (
	"net/netip"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func authzPolicy(name string, action state.AuthzAction, matches ...state.AuthzMatch) *state.Authorization {
	return &state.Authorization{
		Name: name, Namespace: "ns", Action: action,
		Groups: []state.AuthzGroup{{Rules: []state.AuthzRule{{Matches: matches}}}},
	}
}

func azExact(v string) state.AuthzString { return state.AuthzString{Kind: state.AuthzExact, Value: v} }
func azPrefix(v string) state.AuthzString {
	return state.AuthzString{Kind: state.AuthzPrefix, Value: v}
}
func azSuffix(v string) state.AuthzString {
	return state.AuthzString{Kind: state.AuthzSuffix, Value: v}
}

func TestEvalAuthz(t *testing.T) {
	web := AuthzConn{
		SrcIdentity: "spiffe://cluster.local/ns/front/sa/web",
		Src:         netip.MustParseAddrPort("10.0.0.5:40000"),
		Dst:         netip.MustParseAddrPort("10.0.1.7:8080"),
	}
	plain := AuthzConn{Src: web.Src, Dst: web.Dst}
	cidr := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }

	cases := []struct {
		name     string
		policies []*state.Authorization
		conn     AuthzConn
		allowed  bool
		decided  string // key of the deciding policy, "" for none
	}{
		{"no policies allows", nil, web, true, ""},
		{"deny by principal", []*state.Authorization{
			authzPolicy("deny-web", state.AuthzDeny, state.AuthzMatch{Principals: []state.AuthzString{azExact("cluster.local/ns/front/sa/web")}}),
		}, web, false, "ns/deny-web"},
		{"deny with spiffe prefix in principal never matches", []*state.Authorization{
			authzPolicy("deny", state.AuthzDeny, state.AuthzMatch{Principals: []state.AuthzString{azExact("spiffe://cluster.local/ns/front/sa/web")}}),
		}, web, true, ""},
		{"deny other principal allows", []*state.Authorization{
			authzPolicy("deny", state.AuthzDeny, state.AuthzMatch{Principals: []state.AuthzString{azExact("cluster.local/ns/front/sa/other")}}),
		}, web, true, ""},
		{"allow present but no match denies", []*state.Authorization{
			authzPolicy("allow-back", state.AuthzAllow, state.AuthzMatch{Namespaces: []state.AuthzString{azExact("back")}}),
		}, web, false, ""},
		{"allow by namespace from identity", []*state.Authorization{
			authzPolicy("allow-front", state.AuthzAllow, state.AuthzMatch{Namespaces: []state.AuthzString{azExact("front")}}),
		}, web, true, "ns/allow-front"},
		{"deny wins over allow", []*state.Authorization{
			authzPolicy("allow-all-front", state.AuthzAllow, state.AuthzMatch{Namespaces: []state.AuthzString{azPrefix("fr")}}),
			authzPolicy("deny-port", state.AuthzDeny, state.AuthzMatch{DestinationPorts: []uint16{8080}}),
		}, web, false, "ns/deny-port"},
		{"not_destination_ports excludes", []*state.Authorization{
			authzPolicy("deny-not-80", state.AuthzDeny, state.AuthzMatch{NotDestinationPorts: []uint16{8080}}),
		}, web, true, ""},
		{"source ip cidr", []*state.Authorization{
			authzPolicy("allow-net", state.AuthzAllow, state.AuthzMatch{SourceIPs: cidr("10.0.0.0/24")}),
		}, web, true, "ns/allow-net"},
		{"not_source_ips excludes", []*state.Authorization{
			authzPolicy("allow-net", state.AuthzAllow, state.AuthzMatch{SourceIPs: cidr("10.0.0.0/8"), NotSourceIPs: cidr("10.0.0.5/32")}),
		}, web, false, ""},
		{"destination ip", []*state.Authorization{
			authzPolicy("deny-dst", state.AuthzDeny, state.AuthzMatch{DestinationIPs: cidr("10.0.1.0/24")}),
		}, web, false, "ns/deny-dst"},
		{"fields are ANDed", []*state.Authorization{
			authzPolicy("deny", state.AuthzDeny, state.AuthzMatch{DestinationPorts: []uint16{8080}, Namespaces: []state.AuthzString{azExact("back")}}),
		}, web, true, ""},
		{"values are ORed", []*state.Authorization{
			authzPolicy("deny", state.AuthzDeny, state.AuthzMatch{DestinationPorts: []uint16{1, 8080}}),
		}, web, false, "ns/deny"},
		{"principal suffix", []*state.Authorization{
			authzPolicy("allow", state.AuthzAllow, state.AuthzMatch{Principals: []state.AuthzString{azSuffix("/sa/web")}}),
		}, web, true, "ns/allow"},
		{"plaintext peer has no principal", []*state.Authorization{
			authzPolicy("allow", state.AuthzAllow, state.AuthzMatch{Principals: []state.AuthzString{{Kind: state.AuthzPresence}}}),
		}, plain, false, ""},
		{"presence matches any identity", []*state.Authorization{
			authzPolicy("allow", state.AuthzAllow, state.AuthzMatch{Principals: []state.AuthzString{{Kind: state.AuthzPresence}}}),
		}, web, true, "ns/allow"},
		{"not_principals with plaintext peer", []*state.Authorization{
			authzPolicy("deny-unless-web", state.AuthzDeny, state.AuthzMatch{NotPrincipals: []state.AuthzString{azExact("cluster.local/ns/front/sa/web")}}),
		}, plain, false, "ns/deny-unless-web"},
		{"policy without groups matches nothing", []*state.Authorization{
			{Name: "empty-deny", Namespace: "ns", Action: state.AuthzDeny},
		}, web, true, ""},
		{"allow without groups still denies others", []*state.Authorization{
			{Name: "empty-allow", Namespace: "ns", Action: state.AuthzAllow},
		}, web, false, ""},
		{"group with no rules matches", []*state.Authorization{
			{Name: "deny-all", Namespace: "ns", Action: state.AuthzDeny, Groups: []state.AuthzGroup{{}}},
		}, web, false, "ns/deny-all"},
		{"empty match is skipped", []*state.Authorization{
			authzPolicy("deny", state.AuthzDeny, state.AuthzMatch{}),
		}, web, true, ""},
		{"rules in a group are ANDed", []*state.Authorization{
			{Name: "deny", Namespace: "ns", Action: state.AuthzDeny, Groups: []state.AuthzGroup{{Rules: []state.AuthzRule{
				{Matches: []state.AuthzMatch{{DestinationPorts: []uint16{8080}}}},
				{Matches: []state.AuthzMatch{{Namespaces: []state.AuthzString{azExact("back")}}}},
			}}}},
		}, web, true, ""},
		{"groups are ORed", []*state.Authorization{
			{Name: "deny", Namespace: "ns", Action: state.AuthzDeny, Groups: []state.AuthzGroup{
				{Rules: []state.AuthzRule{{Matches: []state.AuthzMatch{{Namespaces: []state.AuthzString{azExact("back")}}}}}},
				{Rules: []state.AuthzRule{{Matches: []state.AuthzMatch{{DestinationPorts: []uint16{8080}}}}}},
			}},
		}, web, false, "ns/deny"},
		{"ipv4-mapped source matches v4 cidr", []*state.Authorization{
			authzPolicy("deny", state.AuthzDeny, state.AuthzMatch{SourceIPs: cidr("10.0.0.5/32")}),
		}, AuthzConn{SrcIdentity: web.SrcIdentity, Src: netip.MustParseAddrPort("[::ffff:10.0.0.5]:1"), Dst: web.Dst}, false, "ns/deny"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := EvalAuthz(c.policies, c.conn)
			if d.Allowed != c.allowed {
				t.Fatalf("allowed = %v, want %v", d.Allowed, c.allowed)
			}
			got := ""
			if d.Policy != nil {
				got = d.Policy.Key()
			}
			if got != c.decided {
				t.Errorf("deciding policy = %q, want %q", got, c.decided)
			}
		})
	}
}

func TestIdentityNamespace(t *testing.T) {
	for in, want := range map[string]string{
		"spiffe://cluster.local/ns/a/sa/b": "a",
		"spiffe://td/ns/a/sa":              "",
		"cluster.local/ns/a/sa/b":          "",
		"":                                 "",
	} {
		if got := identityNamespace(in); got != want {
			t.Errorf("identityNamespace(%q) = %q, want %q", in, got, want)
		}
	}
}
