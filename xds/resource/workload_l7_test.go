package resource

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds/istiopb/securitypb"
	"github.com/meshlet/meshlet/xds/istiopb/workloadpb"
)

// TestDecodeAuthorizationL7 reads the meshlet L7 extension fields of
// Match (1001-1006) in AuthorizationPolicy's string syntax.
func TestDecodeAuthorizationL7(t *testing.T) {
	m := &securitypb.Authorization{
		Name: "l7", Namespace: "default", Scope: securitypb.Scope_NAMESPACE,
		Groups: []*securitypb.Group{{Rules: []*securitypb.Rules{{Matches: []*securitypb.Match{{
			Paths:      []string{"/public*", "*.css", "/exact", "*"},
			NotPaths:   []string{"/public/secret"},
			Methods:    []string{"GET", "HEAD"},
			NotMethods: []string{"DELETE"},
			Hosts:      []string{"*.example.com"},
			NotHosts:   []string{"admin.example.com"},
		}}}}}},
	}
	_, v, err := Decode(state.TypeAuthorization, anyOf(t, m, state.TypeAuthorization))
	if err != nil {
		t.Fatal(err)
	}
	a := v.(*state.Authorization)
	mt := a.Groups[0].Rules[0].Matches[0]
	want := []state.AuthzString{
		{Kind: state.AuthzPrefix, Value: "/public"}, {Kind: state.AuthzSuffix, Value: ".css"},
		{Kind: state.AuthzExact, Value: "/exact"}, {Kind: state.AuthzPresence},
	}
	if len(mt.Paths) != len(want) {
		t.Fatalf("paths = %+v", mt.Paths)
	}
	for i := range want {
		if mt.Paths[i] != want[i] {
			t.Errorf("paths[%d] = %+v, want %+v", i, mt.Paths[i], want[i])
		}
	}
	if len(mt.Methods) != 2 || mt.NotMethods[0].Value != "DELETE" || mt.Hosts[0] != (state.AuthzString{Kind: state.AuthzSuffix, Value: ".example.com"}) ||
		mt.NotHosts[0].Value != "admin.example.com" || mt.NotPaths[0].Value != "/public/secret" {
		t.Errorf("match = %+v", mt)
	}
	if !a.HasL7() {
		t.Error("HasL7 = false")
	}

	for _, c := range []struct {
		name string
		mod  func(*securitypb.Match)
		want string
	}{
		{"empty path", func(m *securitypb.Match) { m.Paths = []string{""} }, "paths[0]: is empty"},
		{"star inside", func(m *securitypb.Match) { m.Methods = []string{"G*T"} }, `methods[0]: "G*T": '*' only at the start or the end`},
		{"stars at both ends", func(m *securitypb.Match) { m.NotHosts = []string{"*x*"} }, "not_hosts[0]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m2 := proto.Clone(m).(*securitypb.Authorization)
			c.mod(m2.Groups[0].Rules[0].Matches[0])
			_, v, err := Decode(state.TypeAuthorization, anyOf(t, m2, state.TypeAuthorization))
			if err == nil || !strings.Contains(err.Error(), c.want) || v != nil {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
		})
	}
}

// TestDecodeWorkloadWaypointBypass reads the meshlet extension field 1001
// of Workload.
func TestDecodeWorkloadWaypointBypass(t *testing.T) {
	for _, bypass := range []bool{false, true} {
		w := testWorkload()
		w.AllowWaypointBypass = bypass
		_, v, err := Decode(state.TypeAddress, anyOf(t, &workloadpb.Address{Type: &workloadpb.Address_Workload{Workload: w}}, state.TypeAddress))
		if err != nil {
			t.Fatal(err)
		}
		if got := v.(*state.Workload).AllowWaypointBypass; got != bypass {
			t.Errorf("AllowWaypointBypass = %v, want %v", got, bypass)
		}
	}
}
