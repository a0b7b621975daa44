//lint:file-ignore SA1019 tests cover the deprecated fields control planes still send.

package resource

import (
	"regexp"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

func decodeOneRoute(t *testing.T, edit func(*routev3.Route)) (*state.Route, error) {
	t.Helper()
	rc := simpleRouteConfig()
	edit(rc.VirtualHosts[0].Routes[0])
	out, err := DecodeRouteConfig(rc)
	if err != nil {
		return nil, err
	}
	return out.VirtualHosts[0].Routes[0], nil
}

func action(a *routev3.RouteAction) func(*routev3.Route) {
	return func(r *routev3.Route) { r.Action = &routev3.Route_Route{Route: a} }
}

func re2(s string) *matcherv3.RegexMatcher { return &matcherv3.RegexMatcher{Regex: s} }

func TestDecodeRouteMatch(t *testing.T) {
	tests := []struct {
		name  string
		match *routev3.RouteMatch
		check func(*testing.T, state.RouteMatch)
	}{
		{"prefix default case sensitive", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/api"}}, func(t *testing.T, m state.RouteMatch) {
			if m.Kind != state.PathPrefix || m.Path != "/api" || !m.CaseSensitive {
				t.Errorf("%+v", m)
			}
		}},
		{"path case insensitive", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/x"}, CaseSensitive: wrapperspb.Bool(false)}, func(t *testing.T, m state.RouteMatch) {
			if m.Kind != state.PathExact || m.Path != "/x" || m.CaseSensitive {
				t.Errorf("%+v", m)
			}
		}},
		{"regex anchored", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: re2("/a|/b")}}, func(t *testing.T, m state.RouteMatch) {
			if m.Kind != state.PathRegex || !m.Regex.MatchString("/b") || m.Regex.MatchString("/a/") || m.Regex.MatchString("x/b") {
				t.Errorf("%+v", m)
			}
		}},
		{"separated prefix", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"}}, func(t *testing.T, m state.RouteMatch) {
			if m.Kind != state.PathSeparatedPrefix || m.Path != "/api" {
				t.Errorf("%+v", m)
			}
		}},
		{"grpc and query params", &routev3.RouteMatch{
			PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
			Grpc:          &routev3.RouteMatch_GrpcRouteMatchOptions{},
			QueryParameters: []*routev3.QueryParameterMatcher{
				{Name: "a", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "V"}, IgnoreCase: true}}},
				{Name: "b", QueryParameterMatchSpecifier: &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}},
			},
		}, func(t *testing.T, m state.RouteMatch) {
			if !m.GRPC || len(m.QueryParams) != 2 {
				t.Fatalf("%+v", m)
			}
			if q := m.QueryParams[0]; q.Name != "a" || q.String == nil || q.String.Value != "v" || !q.String.IgnoreCase {
				t.Errorf("%+v", q)
			}
			if q := m.QueryParams[1]; q.String != nil || !q.Present {
				t.Errorf("%+v", q)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decodeOneRoute(t, func(r *routev3.Route) { r.Match = tc.match })
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, r.Match)
		})
	}
}

func TestDecodeHeaderMatchers(t *testing.T) {
	sm := func(p *matcherv3.StringMatcher) *routev3.HeaderMatcher_StringMatch {
		return &routev3.HeaderMatcher_StringMatch{StringMatch: p}
	}
	tests := []struct {
		name string
		in   *routev3.HeaderMatcher
		want state.HeaderMatcher
	}{
		{"exact deprecated", &routev3.HeaderMatcher{Name: "X-A", HeaderMatchSpecifier: &routev3.HeaderMatcher_ExactMatch{ExactMatch: "v"}},
			state.HeaderMatcher{Name: "x-a", Kind: state.HeaderExact, String: state.StringMatcher{Kind: state.StringExact, Value: "v"}}},
		{"prefix deprecated inverted", &routev3.HeaderMatcher{Name: "a", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_PrefixMatch{PrefixMatch: "p"}},
			state.HeaderMatcher{Name: "a", Kind: state.HeaderPrefix, Invert: true, String: state.StringMatcher{Kind: state.StringPrefix, Value: "p"}}},
		{"suffix deprecated", &routev3.HeaderMatcher{Name: "a", HeaderMatchSpecifier: &routev3.HeaderMatcher_SuffixMatch{SuffixMatch: "s"}},
			state.HeaderMatcher{Name: "a", Kind: state.HeaderSuffix, String: state.StringMatcher{Kind: state.StringSuffix, Value: "s"}}},
		{"contains deprecated", &routev3.HeaderMatcher{Name: "a", HeaderMatchSpecifier: &routev3.HeaderMatcher_ContainsMatch{ContainsMatch: "c"}},
			state.HeaderMatcher{Name: "a", Kind: state.HeaderContains, String: state.StringMatcher{Kind: state.StringContains, Value: "c"}}},
		{"present false", &routev3.HeaderMatcher{Name: "a", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}},
			state.HeaderMatcher{Name: "a", Kind: state.HeaderPresent}},
		{"no specifier means present", &routev3.HeaderMatcher{Name: "a", TreatMissingHeaderAsEmpty: true},
			state.HeaderMatcher{Name: "a", Kind: state.HeaderPresent, Present: true, TreatMissingAsEmpty: true}},
		{"range", &routev3.HeaderMatcher{Name: "a", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: -1, End: 10}}},
			state.HeaderMatcher{Name: "a", Kind: state.HeaderRange, RangeStart: -1, RangeEnd: 10}},
		{"string_match ignore case", &routev3.HeaderMatcher{Name: ":authority", HeaderMatchSpecifier: sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".COM"}, IgnoreCase: true})},
			state.HeaderMatcher{Name: ":authority", Kind: state.HeaderString, String: state.StringMatcher{Kind: state.StringSuffix, Value: ".com", IgnoreCase: true}}},
		{"string_match contains", &routev3.HeaderMatcher{Name: "a", HeaderMatchSpecifier: sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "x"}})},
			state.HeaderMatcher{Name: "a", Kind: state.HeaderString, String: state.StringMatcher{Kind: state.StringContains, Value: "x"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decodeOneRoute(t, func(r *routev3.Route) { r.Match.Headers = []*routev3.HeaderMatcher{tc.in} })
			if err != nil {
				t.Fatal(err)
			}
			if got := r.Match.Headers[0]; got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
	t.Run("regex forms", func(t *testing.T) {
		r, err := decodeOneRoute(t, func(r *routev3.Route) {
			r.Match.Headers = []*routev3.HeaderMatcher{
				{Name: "a", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: re2("v[0-9]")}},
				{Name: "b", HeaderMatchSpecifier: sm(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: re2("x+")}})},
			}
		})
		if err != nil {
			t.Fatal(err)
		}
		a, b := r.Match.Headers[0], r.Match.Headers[1]
		if a.Kind != state.HeaderRegex || !a.String.Regex.MatchString("v1") || a.String.Regex.MatchString("v12") {
			t.Errorf("a: %+v", a)
		}
		if b.Kind != state.HeaderString || b.String.Kind != state.StringRegex || !b.String.Regex.MatchString("xx") || b.String.Regex.MatchString("xxy") {
			t.Errorf("b: %+v", b)
		}
	})
}

func TestDecodeRouteAction(t *testing.T) {
	hv := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
	}
	tests := []struct {
		name  string
		in    *routev3.RouteAction
		check func(*testing.T, *state.RouteAction)
	}{
		{"defaults", &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}, func(t *testing.T, a *state.RouteAction) {
			if a.Cluster != "c" || a.Timeout != 15*time.Second || a.ClusterNotFoundCode != 503 || a.GrpcTimeoutHeaderMax != nil || a.UpgradeWebSocketDisabled {
				t.Errorf("%+v", a)
			}
		}},
		{"cluster header, 404, timeouts", &routev3.RouteAction{
			ClusterSpecifier:            &routev3.RouteAction_ClusterHeader{ClusterHeader: "X-Cluster"},
			ClusterNotFoundResponseCode: routev3.RouteAction_NOT_FOUND,
			Timeout:                     durationpb.New(0),
			IdleTimeout:                 durationpb.New(time.Second),
			MaxStreamDuration: &routev3.RouteAction_MaxStreamDuration{
				MaxStreamDuration:       durationpb.New(time.Minute),
				GrpcTimeoutHeaderMax:    durationpb.New(0),
				GrpcTimeoutHeaderOffset: durationpb.New(time.Millisecond),
			},
		}, func(t *testing.T, a *state.RouteAction) {
			if a.ClusterHeader != "x-cluster" || a.ClusterNotFoundCode != 404 || a.Timeout != 0 || a.IdleTimeout != time.Second ||
				a.MaxStreamDuration != time.Minute || a.GrpcTimeoutHeaderMax == nil || *a.GrpcTimeoutHeaderMax != 0 || a.GrpcTimeoutHeaderOffset != time.Millisecond {
				t.Errorf("%+v", a)
			}
		}},
		{"weighted clusters with headers", &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
			Clusters: []*routev3.WeightedCluster_ClusterWeight{
				{Name: "a", Weight: wrapperspb.UInt32(0)},
				{Name: "b", Weight: wrapperspb.UInt32(30), RequestHeadersToAdd: []*corev3.HeaderValueOption{hv("X-W", "b")}},
			},
		}}}, func(t *testing.T, a *state.RouteAction) {
			if len(a.WeightedClusters) != 2 || a.TotalWeight != 30 || a.WeightedClusters[1].Headers.RequestAdd[0].Key != "x-w" {
				t.Errorf("%+v", a)
			}
		}},
		{"rewrites", &routev3.RouteAction{
			ClusterSpecifier:     &routev3.RouteAction_Cluster{Cluster: "c"},
			RegexRewrite:         &matcherv3.RegexMatchAndSubstitute{Pattern: re2("^/v(\\d+)/(.*)$"), Substitution: "/\\2?v=\\1$"},
			HostRewriteSpecifier: &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "h"},
		}, func(t *testing.T, a *state.RouteAction) {
			got := a.RegexRewrite.ReplaceAllString("/v2/x/y", a.RegexSubstitution)
			if got != "/x/y?v=2$" || a.HostRewriteLiteral != "h" {
				t.Errorf("rewrite %q, %+v", got, a)
			}
		}},
		{"auto host rewrite, hash policies, websocket off", &routev3.RouteAction{
			ClusterSpecifier:     &routev3.RouteAction_Cluster{Cluster: "c"},
			HostRewriteSpecifier: &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)},
			HashPolicy: []*routev3.RouteAction_HashPolicy{
				{PolicySpecifier: &routev3.RouteAction_HashPolicy_Header_{Header: &routev3.RouteAction_HashPolicy_Header{HeaderName: "X-User"}}, Terminal: true},
				{PolicySpecifier: &routev3.RouteAction_HashPolicy_Cookie_{Cookie: &routev3.RouteAction_HashPolicy_Cookie{Name: "sid", Ttl: durationpb.New(time.Hour), Path: "/"}}},
				{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{SourceIp: true}}},
				{PolicySpecifier: &routev3.RouteAction_HashPolicy_QueryParameter_{QueryParameter: &routev3.RouteAction_HashPolicy_QueryParameter{Name: "q"}}},
				{PolicySpecifier: &routev3.RouteAction_HashPolicy_FilterState_{FilterState: &routev3.RouteAction_HashPolicy_FilterState{Key: "k"}}},
			},
			UpgradeConfigs: []*routev3.RouteAction_UpgradeConfig{{UpgradeType: "WebSocket", Enabled: wrapperspb.Bool(false)}},
		}, func(t *testing.T, a *state.RouteAction) {
			want := []state.HashPolicy{
				{Kind: state.HashHeader, Name: "x-user", Terminal: true},
				{Kind: state.HashCookie, Name: "sid", CookieTTL: time.Hour, CookiePath: "/"},
				{Kind: state.HashSourceIP},
				{Kind: state.HashQueryParam, Name: "q"},
				{Kind: state.HashFilterState, Name: "k"},
			}
			if !a.AutoHostRewrite || !a.UpgradeWebSocketDisabled || len(a.HashPolicies) != len(want) {
				t.Fatalf("%+v", a)
			}
			for i := range want {
				if a.HashPolicies[i] != want[i] {
					t.Errorf("hash_policy[%d] = %+v, want %+v", i, a.HashPolicies[i], want[i])
				}
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decodeOneRoute(t, action(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, r.Action)
		})
	}
}

func TestDecodeRedirectAndDirectResponse(t *testing.T) {
	codes := map[routev3.RedirectAction_RedirectResponseCode]int{
		routev3.RedirectAction_MOVED_PERMANENTLY: 301, routev3.RedirectAction_FOUND: 302, routev3.RedirectAction_SEE_OTHER: 303,
		routev3.RedirectAction_TEMPORARY_REDIRECT: 307, routev3.RedirectAction_PERMANENT_REDIRECT: 308,
	}
	for code, want := range codes {
		r, err := decodeOneRoute(t, func(r *routev3.Route) {
			r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
				SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
				HostRedirect:           "h", PortRedirect: 8443,
				PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/new"},
				ResponseCode:         code, StripQuery: true,
			}}
		})
		if err != nil {
			t.Fatal(err)
		}
		got := *r.Redirect
		w := state.RedirectAction{SchemeRedirect: "https", HostRedirect: "h", PortRedirect: 8443, PrefixRewrite: "/new", ResponseCode: want, StripQuery: true}
		if got != w {
			t.Errorf("%v: got %+v want %+v", code, got, w)
		}
	}
	r, err := decodeOneRoute(t, func(r *routev3.Route) {
		r.Action = &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
			SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "HTTP"},
			PathRewriteSpecifier:   &routev3.RedirectAction_RegexRewrite{RegexRewrite: &matcherv3.RegexMatchAndSubstitute{Pattern: re2("a"), Substitution: "\\0\\0"}},
		}}
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Redirect.SchemeRedirect != "http" || r.Redirect.RegexRewrite.ReplaceAllString("xa", r.Redirect.RegexSubstitution) != "xaa" {
		t.Errorf("%+v", r.Redirect)
	}
	r, err = decodeOneRoute(t, func(r *routev3.Route) {
		r.Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 418, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "teapot"}},
		}}
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.DirectResponse.Status != 418 || string(r.DirectResponse.Body) != "teapot" {
		t.Errorf("%+v", r.DirectResponse)
	}
}

func TestDecodeHeaderMutations(t *testing.T) {
	rc := simpleRouteConfig()
	rc.RequestHeadersToAdd = []*corev3.HeaderValueOption{
		{Header: &corev3.HeaderValue{Key: "X-A", Value: "1"}},
		{Header: &corev3.HeaderValue{Key: "x-b", Value: "2"}, AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT, KeepEmptyValue: true},
		{Header: &corev3.HeaderValue{Key: "x-c", RawValue: []byte("3")}, Append: wrapperspb.Bool(false)},
		{Header: &corev3.HeaderValue{Key: "x-d", Value: "4"}, Append: wrapperspb.Bool(true)},
	}
	rc.ResponseHeadersToRemove = []string{"X-Powered-By"}
	rc.VirtualHosts[0].ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-v", Value: "%HOSTNAME%"}, AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS}}
	rc.VirtualHosts[0].Routes[0].RequestHeadersToRemove = []string{"X-Debug"}
	out, err := DecodeRouteConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	wantAdd := []state.HeaderValueOption{
		{Key: "x-a", Value: "1", Action: state.AppendIfExistsOrAdd},
		{Key: "x-b", Value: "2", Action: state.AddIfAbsent, KeepEmptyValue: true},
		{Key: "x-c", Value: "3", Action: state.OverwriteIfExistsOrAdd},
		{Key: "x-d", Value: "4", Action: state.AppendIfExistsOrAdd},
	}
	for i, w := range wantAdd {
		if out.Headers.RequestAdd[i] != w {
			t.Errorf("request_headers_to_add[%d] = %+v, want %+v", i, out.Headers.RequestAdd[i], w)
		}
	}
	if out.Headers.ResponseRemove[0] != "x-powered-by" {
		t.Errorf("response remove %v", out.Headers.ResponseRemove)
	}
	if h := out.VirtualHosts[0].Headers.ResponseAdd[0]; h.Action != state.OverwriteIfExists || h.Value != "%HOSTNAME%" {
		t.Errorf("vhost %+v", h)
	}
	if out.VirtualHosts[0].Routes[0].Headers.RequestRemove[0] != "x-debug" {
		t.Errorf("route %+v", out.VirtualHosts[0].Routes[0].Headers)
	}
	if out.MaxDirectResponseBodyBytes != 4096 {
		t.Errorf("MaxDirectResponseBodyBytes %d", out.MaxDirectResponseBodyBytes)
	}
}

func TestDecodeRouteConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*routev3.RouteConfiguration)
		want []string
	}{
		{"bad regex", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: "v2", Domains: []string{"b"}, Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: re2("(")}},
				Action: rc.VirtualHosts[0].Routes[0].Action,
			}}})
		}, []string{`route_configuration "r": virtual_hosts[1].routes[0].match.safe_regex: error parsing regexp: missing closing )`}},
		{"duplicate domain", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: "v2", Domains: []string{"A", "*"}})
		}, []string{"virtual_hosts[1].domains[1]: duplicate domain \"*\" (also in virtual_hosts[0])"}},
		{"duplicate domain case folded", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Domains = []string{"a.com", "A.com"}
		}, []string{"virtual_hosts[0].domains[1]: duplicate domain"}},
		{"malformed wildcard", func(rc *routev3.RouteConfiguration) { rc.VirtualHosts[0].Domains = []string{"a*b"} }, []string{"virtual_hosts[0].domains[0]"}},
		{"no action", func(rc *routev3.RouteConfiguration) { rc.VirtualHosts[0].Routes[0].Action = nil }, []string{"virtual_hosts[0].routes[0]: action"}},
		{"non forwarding", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Action = &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}}
		}, []string{"routes[0].non_forwarding_action: is not supported"}},
		{"zero total weight", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Action = &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a"}},
			}}}}
		}, []string{"routes[0].route.weighted_clusters.clusters: total weight must be greater than 0"}},
		{"total weight mismatch", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Action = &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{{Name: "a", Weight: wrapperspb.UInt32(5)}}, TotalWeight: wrapperspb.UInt32(100),
			}}}}
		}, []string{"weighted_clusters.total_weight: 100"}},
		{"no cluster specifier", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Action = &routev3.Route_Route{Route: &routev3.RouteAction{}}
		}, []string{"routes[0].route: cluster_specifier"}},
		{"runtime fraction", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Match.RuntimeFraction = &corev3.RuntimeFractionalPercent{}
		}, []string{"routes[0].match.runtime_fraction"}},
		{"connect matcher", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Match.PathSpecifier = &routev3.RouteMatch_ConnectMatcher_{ConnectMatcher: &routev3.RouteMatch_ConnectMatcher{}}
		}, []string{"routes[0].match.connect_matcher"}},
		{"header without name", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Match.Headers = []*routev3.HeaderMatcher{{}, {Name: "a", HeaderMatchSpecifier: &routev3.HeaderMatcher_SafeRegexMatch{SafeRegexMatch: re2("[")}}}
		}, []string{"routes[0].match.headers[0].name: is required"}},
		{"bad string matcher regex", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Match.Headers = []*routev3.HeaderMatcher{{Name: "a", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: re2("[")}}}}}
		}, []string{"routes[0].match.headers[0].string_match.safe_regex.regex: error parsing regexp"}},
		{"add pseudo header", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].RequestHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: ":path", Value: "x"}}}
		}, []string{"virtual_hosts[0].request_headers_to_add[0].header.key"}},
		{"remove host", func(rc *routev3.RouteConfiguration) { rc.RequestHeadersToRemove = []string{"Host"} }, []string{"request_headers_to_remove[0]: header \"host\" cannot be modified"}},
		{"append and append_action", func(rc *routev3.RouteConfiguration) {
			rc.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "a"}, Append: wrapperspb.Bool(true), AppendAction: corev3.HeaderValueOption_ADD_IF_ABSENT}}
		}, []string{"response_headers_to_add[0].append"}},
		{"body too large", func(rc *routev3.RouteConfiguration) {
			rc.MaxDirectResponseBodySizeBytes = wrapperspb.UInt32(2)
			rc.VirtualHosts[0].Routes[0].Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "abc"}}}}
		}, []string{"routes[0].direct_response.body: 3 bytes exceeds"}},
		{"bad status", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Action = &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 99}}
		}, []string{"direct_response.status: 99"}},
		{"bad rewrite regex", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Action = &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}, RegexRewrite: &matcherv3.RegexMatchAndSubstitute{Pattern: re2("*")}}}
		}, []string{"routes[0].route.regex_rewrite.pattern.regex: error parsing regexp"}},
		{"hash policy source ip false", func(rc *routev3.RouteConfiguration) {
			rc.VirtualHosts[0].Routes[0].Action = &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"},
				HashPolicy: []*routev3.RouteAction_HashPolicy{{PolicySpecifier: &routev3.RouteAction_HashPolicy_ConnectionProperties_{ConnectionProperties: &routev3.RouteAction_HashPolicy_ConnectionProperties{}}}}}}
		}, []string{"route.hash_policy[0].connection_properties.source_ip: must be true"}},
		{"require tls", func(rc *routev3.RouteConfiguration) { rc.VirtualHosts[0].RequireTls = routev3.VirtualHost_ALL }, []string{"virtual_hosts[0].require_tls"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rc := simpleRouteConfig()
			tc.edit(rc)
			_, err := DecodeRouteConfig(rc)
			wantErr(t, err, tc.want...)
		})
	}
}

func TestConvertSubstitution(t *testing.T) {
	tests := []struct{ in, want string }{
		{`\1`, `${1}`},
		{`/\2/\1`, `/${2}/${1}`},
		{`a$b`, `a$$b`},
		{`\\1`, `\1`},
		{`x\`, `x\`},
	}
	for _, tc := range tests {
		if got := convertSubstitution(tc.in); got != tc.want {
			t.Errorf("convertSubstitution(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// The converted template must behave like RE2's Rewrite.
	re := regexp.MustCompile(`(a)(b)`)
	if got := re.ReplaceAllString("ab", convertSubstitution(`\2\1$`)); got != "ba$" {
		t.Errorf("ReplaceAllString = %q", got)
	}
}
