//lint:file-ignore SA1019 deprecated Envoy fields (source_ip, metadata) are still sent by control planes and must be honoured or rejected by name, not ignored.

package resource

import (
	"net/netip"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

func exactSM(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func regexSM(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: s}}}
}

// istioPolicy is shaped like Istio's output for an AuthorizationPolicy with
// principals, namespaces, methods and paths.
func istioPolicy() *rbacv3.Policy {
	return &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
				{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":method",
					HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exactSM("GET")}}}},
			}}}},
			{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
				{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: exactSM("/api")}}}},
			}}}},
			{Rule: &rbacv3.Permission_NotRule{NotRule: &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 15000}}}},
			{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 80, End: 90}}},
			{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: &corev3.CidrRange{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(8)}}},
			{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: exactSM("a.b")}},
		}}}}},
		Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
			{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: exactSM("spiffe://cluster.local/ns/foo/sa/bar")}}},
			{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: regexSM(".*/ns/ops/.*")}}},
			{Identifier: &rbacv3.Principal_NotId{NotId: &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{
				DirectRemoteIp: &corev3.CidrRange{AddressPrefix: "192.168.0.0", PrefixLen: wrapperspb.UInt32(16)}}}}},
			{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: &corev3.CidrRange{AddressPrefix: "::1", PrefixLen: wrapperspb.UInt32(128)}}},
			{Identifier: &rbacv3.Principal_SourceIp{SourceIp: &corev3.CidrRange{AddressPrefix: "1.2.3.4", PrefixLen: wrapperspb.UInt32(32)}}},
			{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
				{Identifier: &rbacv3.Principal_Any{Any: true}},
				{Identifier: &rbacv3.Principal_Header{Header: &routev3.HeaderMatcher{Name: "X-User",
					HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}}},
			}}}},
		}}}}},
	}
}

func rbacHTTPFilter(t *testing.T, r *httprbacv3.RBAC) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: state.FilterRBAC, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, r)}}
}

func TestDecodeHTTPRBAC(t *testing.T) {
	h := rdsHCM(t, "r")
	h.HttpFilters = append([]*hcmv3.HttpFilter{rbacHTTPFilter(t, &httprbacv3.RBAC{
		Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			"z": istioPolicy(), "a": istioPolicy(),
		}},
		ShadowRules:     &rbacv3.RBAC{Action: rbacv3.RBAC_DENY},
		RulesStatPrefix: "istio_dry_run_",
	})}, h.HttpFilters...)
	h.NormalizePath = wrapperspb.Bool(true)
	h.MergeSlashes = true
	h.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT
	got, err := decodeHCM(mustAny(t, h))
	if err != nil {
		t.Fatal(err)
	}
	if got.Path != (state.PathNormalization{NormalizePath: true, MergeSlashes: true, EscapedSlashes: state.UnescapeAndRedirect}) {
		t.Errorf("path normalization = %+v", got.Path)
	}
	if len(got.Filters) != 1 || got.Filters[0].RBAC == nil || got.Filters[0].Name != state.FilterRBAC {
		t.Fatalf("filters = %+v", got.Filters)
	}
	r := got.Filters[0].RBAC
	if r.Rules.Action != state.RBACAllow || len(r.Rules.Policies) != 2 || r.Rules.Policies[0].Name != "a" || r.Rules.Policies[1].Name != "z" {
		t.Fatalf("rules = %+v", r.Rules)
	}
	if r.ShadowRules == nil || r.ShadowRules.Action != state.RBACDeny || r.RulesStatPrefix != "istio_dry_run_" {
		t.Fatalf("shadow = %+v", r)
	}
	perm := r.Rules.Policies[0].Permissions[0]
	if perm.Kind != state.PermAnd || len(perm.Rules) != 6 {
		t.Fatalf("permission = %+v", perm)
	}
	kinds := []state.PermissionKind{state.PermOr, state.PermOr, state.PermNot, state.PermDestinationPortRange, state.PermDestinationIP, state.PermServerName}
	for i, k := range kinds {
		if perm.Rules[i].Kind != k {
			t.Errorf("rule %d kind = %v, want %v", i, perm.Rules[i].Kind, k)
		}
	}
	if m := perm.Rules[1].Rules[0]; m.Kind != state.PermURLPath || m.String.Value != "/api" {
		t.Errorf("url_path = %+v", m)
	}
	if p := perm.Rules[3]; p.PortStart != 80 || p.PortEnd != 90 {
		t.Errorf("port range = %+v", p)
	}
	if p := perm.Rules[4]; p.CIDR != netip.MustParsePrefix("10.0.0.0/8") {
		t.Errorf("cidr = %v", p.CIDR)
	}
	ids := r.Rules.Policies[0].Principals[0].IDs
	pkinds := []state.PrincipalKind{state.PrincipalAuthenticated, state.PrincipalAuthenticated, state.PrincipalNot,
		state.PrincipalRemoteIP, state.PrincipalSourceIP, state.PrincipalAnd}
	for i, k := range pkinds {
		if ids[i].Kind != k {
			t.Errorf("principal %d kind = %v, want %v", i, ids[i].Kind, k)
		}
	}
	if ids[1].Name.Regex == nil || !ids[1].Name.Regex.MatchString("spiffe://td/ns/ops/sa/x") {
		t.Errorf("namespace regex = %+v", ids[1].Name)
	}
	if h := ids[5].IDs[1].Header; h.Name != "x-user" || h.Kind != state.HeaderPresent {
		t.Errorf("header = %+v", h)
	}
}

func TestDecodeRBACPerRoute(t *testing.T) {
	o, err := decodeFilterOverrides(map[string]*anypb.Any{
		"off": mustAny(t, &httprbacv3.RBACPerRoute{}),
		"on": mustAny(t, &httprbacv3.RBACPerRoute{Rbac: &httprbacv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY,
			Policies: map[string]*rbacv3.Policy{"p": istioPolicy()}}}}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if !o["off"].Disabled || o["off"].RBAC != nil {
		t.Errorf("off = %+v", o["off"])
	}
	if o["on"].Disabled || o["on"].RBAC == nil || o["on"].RBAC.Rules.Action != state.RBACDeny {
		t.Errorf("on = %+v", o["on"])
	}
	_, err = decodeFilterOverrides(map[string]*anypb.Any{"bad": mustAny(t, &httprbacv3.RBACPerRoute{Rbac: &httprbacv3.RBAC{
		Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"p": {Principals: istioPolicy().Principals}}}}})})
	wantErr(t, err, `typed_per_filter_config["bad"]`, `rbac: rbac.rules.policies["p"].permissions: at least one permission is required`)
}

func TestDecodeNetworkRBAC(t *testing.T) {
	l := tcpListener(t)
	fc := l.FilterChains[0]
	rbac := &netrbacv3.RBAC{StatPrefix: "tcp.", EnforcementType: netrbacv3.RBAC_CONTINUOUS,
		Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"p": istioPolicy()}}}
	fc.Filters = append([]*listenerv3.Filter{{Name: state.NetworkFilterRBAC,
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, rbac)}}}, fc.Filters...)
	got, err := DecodeListener(l)
	if err != nil {
		t.Fatal(err)
	}
	c := got.FilterChains[0]
	if len(c.RBAC) != 1 || c.TCPProxy == nil || !c.RBAC[0].Continuous || c.RBAC[0].Rules.Action != state.RBACDeny {
		t.Fatalf("chain = %+v", c)
	}
	rbac.StatPrefix = ""
	fc.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, rbac)}
	_, err = DecodeListener(l)
	wantErr(t, err, "filters[0].typed_config: rbac: stat_prefix: is required")
}

func TestDecodeRBACErrors(t *testing.T) {
	perm := func(p *rbacv3.Permission) *rbacv3.Policy {
		return &rbacv3.Policy{Permissions: []*rbacv3.Permission{p}, Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}}
	}
	princ := func(p *rbacv3.Principal) *rbacv3.Policy {
		return &rbacv3.Policy{Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}, Principals: []*rbacv3.Principal{p}}
	}
	for _, tc := range []struct {
		name   string
		policy *rbacv3.Policy
		want   string
	}{
		{"metadata permission", perm(&rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: &matcherv3.MetadataMatcher{}}}), "permissions[0].metadata: is not supported"},
		{"matcher permission", perm(&rbacv3.Permission{Rule: &rbacv3.Permission_Matcher{Matcher: &corev3.TypedExtensionConfig{}}}), "permissions[0].matcher: is not supported"},
		{"nested metadata", perm(&rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_Any{Any: true}},
			{Rule: &rbacv3.Permission_NotRule{NotRule: &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: &matcherv3.MetadataMatcher{}}}}},
		}}}}), "permissions[0].or_rules.rules[1].not_rule.metadata: is not supported"},
		{"empty rule", perm(&rbacv3.Permission{}), "permissions[0]: rule is required"},
		{"any false", perm(&rbacv3.Permission{Rule: &rbacv3.Permission_Any{}}), "any: must be true"},
		{"bad port range", perm(&rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 9, End: 9}}}), "destination_port_range"},
		{"bad regex", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: regexSM("(")}}}), "principals[0].authenticated.principal_name.safe_regex.regex"},
		{"metadata principal", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{}}}), "principals[0].metadata: is not supported"},
		{"filter state principal", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_FilterState{FilterState: &matcherv3.FilterStateMatcher{}}}), "principals[0].filter_state: is not supported"},
		{"empty or ids", princ(&rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{}}}), "or_ids.ids: at least one id is required"},
		{"no principals", &rbacv3.Policy{Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}}, "principals: at least one principal is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeHTTPRBAC(mustAny(t, &httprbacv3.RBAC{Rules: &rbacv3.RBAC{Policies: map[string]*rbacv3.Policy{"pol": tc.policy}}}))
			wantErr(t, err, `rules.policies["pol"].`, tc.want)
		})
	}
}
