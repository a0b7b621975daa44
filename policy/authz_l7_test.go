package policy

import (
	"net/netip"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// TestEvalAuthzL7: L7 matches (the meshlet extension) leave the
// connection-time decision open only when they could change it, and
// decide each request once it is known.
func TestEvalAuthzL7(t *testing.T) {
	conn := AuthzConn{
		SrcIdentity: "spiffe://cluster.local/ns/front/sa/web",
		Src:         netip.MustParseAddrPort("10.0.0.5:40000"),
		Dst:         netip.MustParseAddrPort("10.0.1.7:8080"),
	}
	req := func(method, path, host string) AuthzConn {
		c := conn
		c.HTTP = &AuthzRequest{Method: method, Path: path, Host: host}
		return c
	}
	presence := state.AuthzString{Kind: state.AuthzPresence}
	denyAdmin := authzPolicy("deny-admin", state.AuthzDeny, state.AuthzMatch{Paths: []state.AuthzString{azPrefix("/admin")}})
	allowGet := authzPolicy("allow-get", state.AuthzAllow, state.AuthzMatch{Methods: []state.AuthzString{azExact("GET")}})
	allowFront := authzPolicy("allow-front", state.AuthzAllow, state.AuthzMatch{Namespaces: []state.AuthzString{azExact("front")}})
	denyOtherPort := authzPolicy("deny-9000", state.AuthzDeny, state.AuthzMatch{DestinationPorts: []uint16{9000}, Paths: []state.AuthzString{presence}})
	allowHost := authzPolicy("allow-host", state.AuthzAllow, state.AuthzMatch{Hosts: []state.AuthzString{azExact("web.example.com")}, NotPaths: []state.AuthzString{azSuffix(".php")}})

	type want struct{ allowed, needsHTTP bool }
	cases := []struct {
		name     string
		policies []*state.Authorization
		conn     AuthzConn
		want     want
	}{
		{"L7 deny is open at connection time", []*state.Authorization{denyAdmin}, conn, want{false, true}},
		{"L7 allow is open at connection time", []*state.Authorization{allowGet}, conn, want{false, true}},
		{"an L4 allow that matches does not settle an open L7 deny", []*state.Authorization{denyAdmin, allowFront}, conn, want{false, true}},
		{"an L4 allow that matches settles an open L7 allow", []*state.Authorization{allowGet, allowFront}, conn, want{true, false}},
		{"an L7 match on another port is decided", []*state.Authorization{denyOtherPort}, conn, want{true, false}},
		{"an L4 deny is decided", []*state.Authorization{denyAdmin, authzPolicy("deny-front", state.AuthzDeny, state.AuthzMatch{Namespaces: []state.AuthzString{azExact("front")}})}, conn, want{false, false}},
		{"request: path denied", []*state.Authorization{denyAdmin, allowGet}, req("GET", "/admin/x", "a"), want{false, false}},
		{"request: method not allowed", []*state.Authorization{denyAdmin, allowGet}, req("POST", "/public", "a"), want{false, false}},
		{"request: allowed", []*state.Authorization{denyAdmin, allowGet}, req("GET", "/public", "a"), want{true, false}},
		{"request: host case and port ignored", []*state.Authorization{allowHost}, req("GET", "/", "Web.Example.com:8080"), want{true, false}},
		{"request: other host", []*state.Authorization{allowHost}, req("GET", "/", "other.example.com"), want{false, false}},
		{"request: not_paths excludes", []*state.Authorization{allowHost}, req("GET", "/x.php", "web.example.com"), want{false, false}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := EvalAuthz(c.policies, c.conn)
			if d.Allowed != c.want.allowed || d.NeedsHTTP != c.want.needsHTTP {
				t.Errorf("decision = %+v, want allowed=%v needsHTTP=%v", d, c.want.allowed, c.want.needsHTTP)
			}
		})
	}
}
