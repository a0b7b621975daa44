package policy

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"net/netip"
	"net/url"
	"regexp"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func spiffeCert(id string) *x509.Certificate {
	u, err := url.Parse(id)
	if err != nil {
		panic(err)
	}
	return &x509.Certificate{URIs: []*url.URL{u}, Subject: pkix.Name{CommonName: "ignored"}}
}

func exact(s string) *state.StringMatcher {
	return &state.StringMatcher{Kind: state.StringExact, Value: s}
}
func prefix(s string) *state.StringMatcher {
	return &state.StringMatcher{Kind: state.StringPrefix, Value: s}
}
func regex(s string) *state.StringMatcher {
	return &state.StringMatcher{Kind: state.StringRegex, Regex: regexp.MustCompile("^(?:" + s + ")$")}
}

func anyPerm() state.Permission     { return state.Permission{Kind: state.PermAny} }
func anyPrincipal() state.Principal { return state.Principal{Kind: state.PrincipalAny} }
func principalName(m *state.StringMatcher) state.Principal {
	return state.Principal{Kind: state.PrincipalAuthenticated, Name: m}
}
func pathPerm(m *state.StringMatcher) state.Permission {
	return state.Permission{Kind: state.PermURLPath, String: m}
}
func methodPerm(m string) state.Permission {
	return state.Permission{Kind: state.PermHeader, Header: &state.HeaderMatcher{Name: ":method", Kind: state.HeaderExact,
		String: state.StringMatcher{Kind: state.StringExact, Value: m}}}
}

// istioAllow is what Istio generates for an AuthorizationPolicy
//
//	action: ALLOW
//	rules:
//	- from: [{source: {principals: [cluster.local/ns/foo/sa/bar]}}, {source: {namespaces: [ops]}}]
//	  to: [{operation: {methods: [GET], paths: [/api/*]}}]
//
// one policy whose permission is and(or(method), or(path)) and whose
// principal is or(and(or(principal)), and(or(namespace regex))).
func istioAllow() *state.RBACRules {
	return &state.RBACRules{Action: state.RBACAllow, Policies: []state.RBACPolicy{{
		Name: "ns[foo]-policy[httpbin]-rule[0]",
		Permissions: []state.Permission{{Kind: state.PermAnd, Rules: []state.Permission{
			{Kind: state.PermOr, Rules: []state.Permission{methodPerm("GET")}},
			{Kind: state.PermOr, Rules: []state.Permission{pathPerm(prefix("/api/"))}},
		}}},
		Principals: []state.Principal{{Kind: state.PrincipalOr, IDs: []state.Principal{
			principalName(exact("spiffe://cluster.local/ns/foo/sa/bar")),
			principalName(regex(`spiffe://.*/ns/ops/.*`)),
		}}},
	}}}
}

func TestEvalRBAC(t *testing.T) {
	bar := spiffeCert("spiffe://cluster.local/ns/foo/sa/bar")
	baz := spiffeCert("spiffe://cluster.local/ns/foo/sa/baz")
	ops := spiffeCert("spiffe://cluster.local/ns/ops/sa/admin")
	peer := func(c *x509.Certificate, method, path string) *RBACInput {
		r := get("svc", path)
		r.method = method
		return &RBACInput{TLS: true, Peer: c, Request: r,
			DirectRemote: netip.MustParseAddrPort("10.0.0.1:5000"), Local: netip.MustParseAddrPort("10.0.0.2:8080")}
	}
	plain := func(path string) *RBACInput {
		return &RBACInput{Request: get("svc", path), DirectRemote: netip.MustParseAddrPort("10.0.0.1:5000")}
	}
	denyAdmin := &state.RBACRules{Action: state.RBACDeny, Policies: []state.RBACPolicy{{
		Name:        "deny-admin",
		Permissions: []state.Permission{pathPerm(exact("/admin")), pathPerm(prefix("/admin/"))},
		Principals:  []state.Principal{anyPrincipal()},
	}}}
	logAll := &state.RBACRules{Action: state.RBACLog, Policies: []state.RBACPolicy{{
		Name: "log-bar", Permissions: []state.Permission{anyPerm()},
		Principals: []state.Principal{principalName(exact("spiffe://cluster.local/ns/foo/sa/bar"))},
	}}}
	for _, tc := range []struct {
		name    string
		rules   *state.RBACRules
		in      *RBACInput
		allowed bool
		policy  string
		log     bool
	}{
		{"nil rules allow", nil, plain("/"), true, "", false},
		{"empty ALLOW denies all", &state.RBACRules{Action: state.RBACAllow}, plain("/"), false, "", false},
		{"empty DENY allows all", &state.RBACRules{Action: state.RBACDeny}, plain("/"), true, "", false},
		{"istio allow principal", istioAllow(), peer(bar, "GET", "/api/x"), true, "ns[foo]-policy[httpbin]-rule[0]", false},
		{"istio allow namespace", istioAllow(), peer(ops, "GET", "/api/x?q=1"), true, "ns[foo]-policy[httpbin]-rule[0]", false},
		{"istio other sa", istioAllow(), peer(baz, "GET", "/api/x"), false, "", false},
		{"istio wrong method", istioAllow(), peer(bar, "POST", "/api/x"), false, "", false},
		{"istio wrong path", istioAllow(), peer(bar, "GET", "/admin"), false, "", false},
		{"istio plaintext", istioAllow(), plain("/api/x"), false, "", false},
		{"deny exact", denyAdmin, plain("/admin"), false, "deny-admin", false},
		{"deny prefix query", denyAdmin, plain("/admin/x?y"), false, "deny-admin", false},
		{"deny not matching", denyAdmin, plain("/administrator"), true, "", false},
		{"log match", logAll, peer(bar, "GET", "/"), true, "log-bar", true},
		{"log no match", logAll, peer(baz, "GET", "/"), true, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := EvalRBAC(tc.rules, tc.in)
			if got.Allowed != tc.allowed || got.Policy != tc.policy || got.Log != tc.log {
				t.Fatalf("EvalRBAC = %+v; want allowed=%v policy=%q log=%v", got, tc.allowed, tc.policy, tc.log)
			}
		})
	}
}

func TestRBACRules(t *testing.T) {
	cert := spiffeCert("spiffe://td/ns/a/sa/b")
	cert.DNSNames = []string{"b.a.svc"}
	cert.Subject = pkix.Name{CommonName: "b", Organization: []string{"mesh"}}
	in := &RBACInput{
		DirectRemote: netip.MustParseAddrPort("192.168.1.10:4000"),
		Remote:       netip.MustParseAddrPort("[2001:db8::1]:1"),
		Local:        netip.MustParseAddrPort("[::ffff:10.1.2.3]:9443"),
		ServerName:   "api.example.com",
		TLS:          true,
		Peer:         cert,
		Request:      get("api.example.com", "/v1/items?x=1", "x-team", "blue", "x-team", "red"),
	}
	cidr := netip.MustParsePrefix
	hdr := func(name string, m state.StringMatcher) *state.HeaderMatcher {
		return &state.HeaderMatcher{Name: name, Kind: state.HeaderString, String: m}
	}
	perms := []struct {
		name string
		p    state.Permission
		want bool
	}{
		{"any", anyPerm(), true},
		{"dst ip v4-mapped", state.Permission{Kind: state.PermDestinationIP, CIDR: cidr("10.1.0.0/16")}, true},
		{"dst ip miss", state.Permission{Kind: state.PermDestinationIP, CIDR: cidr("10.2.0.0/16")}, false},
		{"dst port", state.Permission{Kind: state.PermDestinationPort, Port: 9443}, true},
		{"dst port miss", state.Permission{Kind: state.PermDestinationPort, Port: 80}, false},
		{"dst port range", state.Permission{Kind: state.PermDestinationPortRange, PortStart: 9000, PortEnd: 9444}, true},
		{"dst port range end exclusive", state.Permission{Kind: state.PermDestinationPortRange, PortStart: 9000, PortEnd: 9443}, false},
		{"sni", state.Permission{Kind: state.PermServerName, String: &state.StringMatcher{Kind: state.StringSuffix, Value: ".example.com"}}, true},
		{"path ignores query", pathPerm(exact("/v1/items")), true},
		{"header joined values", state.Permission{Kind: state.PermHeader, Header: hdr("x-team", *exact("blue,red"))}, true},
		{"not", state.Permission{Kind: state.PermNot, Not: &state.Permission{Kind: state.PermDestinationPort, Port: 9443}}, false},
		{"and", state.Permission{Kind: state.PermAnd, Rules: []state.Permission{anyPerm(), {Kind: state.PermDestinationPort, Port: 1}}}, false},
		{"or", state.Permission{Kind: state.PermOr, Rules: []state.Permission{{Kind: state.PermDestinationPort, Port: 1}, anyPerm()}}, true},
	}
	for _, tc := range perms {
		if got := matchPermission(&tc.p, in); got != tc.want {
			t.Errorf("permission %s = %v, want %v", tc.name, got, tc.want)
		}
	}
	principals := []struct {
		name string
		p    state.Principal
		want bool
	}{
		{"any", anyPrincipal(), true},
		{"authenticated any", state.Principal{Kind: state.PrincipalAuthenticated}, true},
		{"uri san", principalName(exact("spiffe://td/ns/a/sa/b")), true},
		{"dns san", principalName(exact("b.a.svc")), true},
		{"subject", principalName(exact("CN=b,O=mesh")), true},
		{"other", principalName(exact("spiffe://td/ns/a/sa/c")), false},
		{"direct remote", state.Principal{Kind: state.PrincipalDirectRemoteIP, CIDR: cidr("192.168.1.0/24")}, true},
		{"source ip is direct", state.Principal{Kind: state.PrincipalSourceIP, CIDR: cidr("192.168.1.10/32")}, true},
		{"remote ip is xff client", state.Principal{Kind: state.PrincipalRemoteIP, CIDR: cidr("2001:db8::/32")}, true},
		{"remote ip not direct", state.Principal{Kind: state.PrincipalRemoteIP, CIDR: cidr("192.168.1.0/24")}, false},
		{"header", state.Principal{Kind: state.PrincipalHeader, Header: hdr(":authority", *exact("api.example.com"))}, true},
		{"url path", state.Principal{Kind: state.PrincipalURLPath, Name: prefix("/v1/")}, true},
		{"not id", state.Principal{Kind: state.PrincipalNot, Not: &state.Principal{Kind: state.PrincipalAuthenticated}}, false},
		{"and ids", state.Principal{Kind: state.PrincipalAnd, IDs: []state.Principal{anyPrincipal(), principalName(exact("x"))}}, false},
		{"or ids", state.Principal{Kind: state.PrincipalOr, IDs: []state.Principal{principalName(exact("x")), anyPrincipal()}}, true},
	}
	for _, tc := range principals {
		if got := matchPrincipal(&tc.p, in); got != tc.want {
			t.Errorf("principal %s = %v, want %v", tc.name, got, tc.want)
		}
	}

	// At L4 there is no request: header and path rules never match, and an
	// unauthenticated connection matches no authenticated principal.
	l4 := &RBACInput{DirectRemote: in.DirectRemote, Local: in.Local}
	for _, p := range []state.Permission{pathPerm(prefix("/")), methodPerm("GET")} {
		if matchPermission(&p, l4) {
			t.Errorf("L4 permission %+v matched", p)
		}
	}
	if p := (state.Principal{Kind: state.PrincipalAuthenticated}); matchPrincipal(&p, l4) {
		t.Error("authenticated matched a plaintext connection")
	}
	if got := PeerPrincipal(cert); got != "spiffe://td/ns/a/sa/b" {
		t.Errorf("PeerPrincipal = %q", got)
	}
}

// TestRBACFirstPolicyByName pins that the reported policy is the first
// matching one in name order (the decoder sorts them).
func TestRBACFirstPolicyByName(t *testing.T) {
	rules := &state.RBACRules{Action: state.RBACDeny, Policies: []state.RBACPolicy{
		{Name: "a", Permissions: []state.Permission{{Kind: state.PermDestinationPort, Port: 1}}, Principals: []state.Principal{anyPrincipal()}},
		{Name: "b", Permissions: []state.Permission{anyPerm()}, Principals: []state.Principal{anyPrincipal()}},
		{Name: "c", Permissions: []state.Permission{anyPerm()}, Principals: []state.Principal{anyPrincipal()}},
	}}
	got := EvalRBAC(rules, &RBACInput{Local: netip.MustParseAddrPort("1.1.1.1:2")})
	if got.Allowed || got.Policy != "b" {
		t.Fatalf("got %+v, want denied by b", got)
	}
}
