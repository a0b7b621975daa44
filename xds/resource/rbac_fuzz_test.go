package resource

import (
	"net/netip"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	// Test-only import: the fuzzer checks that whatever the decoder accepts
	// the evaluator can run. The layering rule (resource must not import
	// policy) is about the shipped package; this file is not part of it.
	"github.com/meshlet/meshlet/policy"
)

// fuzzRBACRequest is a policy.Request built from fuzz input.
type fuzzRBACRequest struct {
	authority, path, method string
	headers                 map[string]string
}

func (r *fuzzRBACRequest) Authority() string { return r.authority }
func (r *fuzzRBACRequest) Path() string      { return r.path }
func (r *fuzzRBACRequest) Method() string    { return r.method }
func (r *fuzzRBACRequest) Header(name string) (string, bool) {
	switch name {
	case ":authority":
		return r.authority, true
	case ":path":
		return r.path, true
	case ":method":
		return r.method, true
	}
	v, ok := r.headers[name]
	return v, ok
}

// FuzzHTTPRBAC feeds serialized envoy.extensions.filters.http.rbac.v3.RBAC
// bytes to the decoder and evaluates every accepted config against a fuzzed
// request: neither step may panic, an error never comes with a value, and
// the verdict is deterministic.
func FuzzHTTPRBAC(f *testing.F) {
	seeds := []*httprbacv3.RBAC{
		{},
		{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{"istio": istioPolicy()}}},
		{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"any": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
			Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}}}},
			ShadowRules: &rbacv3.RBAC{Action: rbacv3.RBAC_LOG, Policies: map[string]*rbacv3.Policy{"i": istioPolicy()}}},
	}
	for _, s := range seeds {
		b, err := proto.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "a.b:80", "/api?x=1", "GET", "x-user", "alice", "10.1.2.3:84", "a.b")
	}
	f.Fuzz(func(t *testing.T, b []byte, authority, path, method, hname, hval, local, sni string) {
		v, err := decodeHTTPRBAC(&anypb.Any{TypeUrl: typeHTTPRBAC, Value: b})
		if err != nil {
			if v != nil {
				t.Fatalf("value %v returned with error %v", v, err)
			}
			return
		}
		loc, _ := netip.ParseAddrPort(local)
		in := &policy.RBACInput{
			DirectRemote: netip.MustParseAddrPort("192.168.1.1:5000"),
			Local:        loc,
			ServerName:   sni,
			TLS:          true,
			Request: &fuzzRBACRequest{authority: authority, path: path, method: method,
				headers: map[string]string{strings.ToLower(hname): hval}},
		}
		for _, rules := range []*struct{ r, s bool }{{true, false}, {false, true}} {
			r := v.Rules
			if rules.s {
				r = v.ShadowRules
			}
			first := policy.EvalRBAC(r, in)
			if again := policy.EvalRBAC(r, in); again != first {
				t.Fatalf("verdict changed between runs: %+v then %+v", first, again)
			}
		}
		// The network filter path (no request) must not panic either.
		in.Request = nil
		policy.EvalRBAC(v.Rules, in)
	})
}
