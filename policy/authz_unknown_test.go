package policy

import (
	"net/netip"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// A match carrying conditions this proxy cannot decode (a newer Workload
// API's service_accounts, say) fails closed: it never allows, and in a
// DENY policy the unknown conditions count as met.
func TestEvalAuthzUnknownFields(t *testing.T) {
	conn := func(ns string) AuthzConn {
		return AuthzConn{
			SrcIdentity: "spiffe://cluster.local/ns/" + ns + "/sa/app",
			Src:         netip.MustParseAddrPort("10.0.0.5:40000"),
			Dst:         netip.MustParseAddrPort("10.0.0.9:8080"),
		}
	}
	nsMatch := func(ns string, unknown ...int32) state.AuthzMatch {
		return state.AuthzMatch{Namespaces: []state.AuthzString{{Kind: state.AuthzExact, Value: ns}}, UnknownFields: unknown}
	}
	policy := func(action state.AuthzAction, ms ...state.AuthzMatch) *state.Authorization {
		return &state.Authorization{Name: "p", Namespace: "ns", Action: action,
			Groups: []state.AuthzGroup{{Rules: []state.AuthzRule{{Matches: ms}}}}}
	}
	tests := []struct {
		name   string
		p      *state.Authorization
		from   string
		allows bool
	}{
		{"allow: known match allows", policy(state.AuthzAllow, nsMatch("a")), "a", true},
		{"allow: unknown condition never allows", policy(state.AuthzAllow, nsMatch("a", 11)), "a", false},
		{"allow: unknown-only match never allows", policy(state.AuthzAllow, state.AuthzMatch{UnknownFields: []int32{11}}), "a", false},
		{"allow: another match of the rule still allows", policy(state.AuthzAllow, nsMatch("a", 11), nsMatch("a")), "a", true},
		{"deny: unknown-only match denies everyone", policy(state.AuthzDeny, state.AuthzMatch{UnknownFields: []int32{11}}), "b", false},
		{"deny: known conditions still narrow it", policy(state.AuthzDeny, nsMatch("a", 12)), "b", true},
		{"deny: known conditions met, unknown assumed met", policy(state.AuthzDeny, nsMatch("a", 12)), "a", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := EvalAuthz([]*state.Authorization{tt.p}, conn(tt.from))
			if d.Allowed != tt.allows {
				t.Errorf("from ns %s: allowed=%v, want %v", tt.from, d.Allowed, tt.allows)
			}
		})
	}
}
