package policy

import (
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestMatchPath(t *testing.T) {
	tests := []struct {
		name string
		m    state.RouteMatch
		path string
		want bool
	}{
		{"prefix", state.RouteMatch{Kind: state.PathPrefix, Path: "/api", CaseSensitive: true}, "/api/v1", true},
		{"prefix no sep needed", state.RouteMatch{Kind: state.PathPrefix, Path: "/api", CaseSensitive: true}, "/apix", true},
		{"prefix case", state.RouteMatch{Kind: state.PathPrefix, Path: "/api", CaseSensitive: true}, "/API", false},
		{"prefix ignore case", state.RouteMatch{Kind: state.PathPrefix, Path: "/api", CaseSensitive: false}, "/APi/x", true},
		{"prefix empty", state.RouteMatch{Kind: state.PathPrefix, Path: "", CaseSensitive: true}, "/anything", true},
		{"prefix longer than path", state.RouteMatch{Kind: state.PathPrefix, Path: "/api/v1", CaseSensitive: true}, "/api", false},
		{"prefix sees query", state.RouteMatch{Kind: state.PathPrefix, Path: "/a?x", CaseSensitive: true}, "/a?x=1", true},
		{"exact", state.RouteMatch{Kind: state.PathExact, Path: "/a", CaseSensitive: true}, "/a", true},
		{"exact ignores query", state.RouteMatch{Kind: state.PathExact, Path: "/a", CaseSensitive: true}, "/a?b=c", true},
		{"exact not prefix", state.RouteMatch{Kind: state.PathExact, Path: "/a", CaseSensitive: true}, "/a/", false},
		{"exact case", state.RouteMatch{Kind: state.PathExact, Path: "/a", CaseSensitive: true}, "/A", false},
		{"exact ignore case", state.RouteMatch{Kind: state.PathExact, Path: "/abc", CaseSensitive: false}, "/aBc?Q", true},
		{"regex full", state.RouteMatch{Kind: state.PathRegex, Regex: full(`/v\d+/.*`)}, "/v12/x", true},
		{"regex anchored start", state.RouteMatch{Kind: state.PathRegex, Regex: full(`/v\d+`)}, "/x/v1", false},
		{"regex anchored end", state.RouteMatch{Kind: state.PathRegex, Regex: full(`/v\d+`)}, "/v1/x", false},
		{"regex alternation full", state.RouteMatch{Kind: state.PathRegex, Regex: full(`/a|/ab`)}, "/ab", true},
		{"regex ignores query", state.RouteMatch{Kind: state.PathRegex, Regex: full(`/v\d+`)}, "/v1?x=y", true},
		{"regex nil", state.RouteMatch{Kind: state.PathRegex}, "/", false},
		{"sep prefix exact", state.RouteMatch{Kind: state.PathSeparatedPrefix, Path: "/api", CaseSensitive: true}, "/api", true},
		{"sep prefix slash", state.RouteMatch{Kind: state.PathSeparatedPrefix, Path: "/api", CaseSensitive: true}, "/api/x", true},
		{"sep prefix query", state.RouteMatch{Kind: state.PathSeparatedPrefix, Path: "/api", CaseSensitive: true}, "/api?x", true},
		{"sep prefix fragment", state.RouteMatch{Kind: state.PathSeparatedPrefix, Path: "/api", CaseSensitive: true}, "/api#f", true},
		{"sep prefix not boundary", state.RouteMatch{Kind: state.PathSeparatedPrefix, Path: "/api", CaseSensitive: true}, "/apix", false},
		{"sep prefix case", state.RouteMatch{Kind: state.PathSeparatedPrefix, Path: "/api", CaseSensitive: true}, "/API/x", false},
		{"sep prefix ignore case", state.RouteMatch{Kind: state.PathSeparatedPrefix, Path: "/api", CaseSensitive: false}, "/API/x", true},
		{"sep prefix query holds prefix", state.RouteMatch{Kind: state.PathSeparatedPrefix, Path: "/api", CaseSensitive: true}, "/ap?i", false},
	}
	for _, tt := range tests {
		rt := &state.Route{Match: tt.m}
		if got := MatchRoute(rt, get("h", tt.path)); got != tt.want {
			t.Errorf("%s: MatchRoute(%q) = %v, want %v", tt.name, tt.path, got, tt.want)
		}
	}
	if MatchRoute(nil, get("h", "/")) {
		t.Error("MatchRoute(nil) = true")
	}
}

func TestMatchHeader(t *testing.T) {
	exact := func(v string) state.StringMatcher { return state.StringMatcher{Kind: state.StringExact, Value: v} }
	tests := []struct {
		name string
		h    state.HeaderMatcher
		r    *req
		want bool
	}{
		{"exact", state.HeaderMatcher{Name: "x", Kind: state.HeaderExact, String: exact("a")}, get("h", "/", "x", "a"), true},
		{"exact mismatch", state.HeaderMatcher{Name: "x", Kind: state.HeaderExact, String: exact("a")}, get("h", "/", "x", "b"), false},
		{"exact case", state.HeaderMatcher{Name: "x", Kind: state.HeaderExact, String: exact("a")}, get("h", "/", "x", "A"), false},
		{"exact missing", state.HeaderMatcher{Name: "x", Kind: state.HeaderExact, String: exact("a")}, get("h", "/"), false},
		{"exact inverted", state.HeaderMatcher{Name: "x", Kind: state.HeaderExact, String: exact("a"), Invert: true}, get("h", "/", "x", "b"), true},
		// Envoy: invert does not make a missing header match a value matcher.
		{"exact inverted missing", state.HeaderMatcher{Name: "x", Kind: state.HeaderExact, String: exact("a"), Invert: true}, get("h", "/"), false},
		{"exact multi joined", state.HeaderMatcher{Name: "x", Kind: state.HeaderExact, String: exact("a,b")}, get("h", "/", "x", "a", "x", "b"), true},
		{"exact multi single value", state.HeaderMatcher{Name: "x", Kind: state.HeaderExact, String: exact("a")}, get("h", "/", "x", "a", "x", "b"), false},
		{"regex", state.HeaderMatcher{Name: "x", Kind: state.HeaderRegex, String: state.StringMatcher{Kind: state.StringRegex, Regex: full(`\d{3}`)}}, get("h", "/", "x", "123"), true},
		// route_components.proto: "\d{3} does not match 1234, so it will match when inverted".
		{"regex full only", state.HeaderMatcher{Name: "x", Kind: state.HeaderRegex, String: state.StringMatcher{Kind: state.StringRegex, Regex: full(`\d{3}`)}}, get("h", "/", "x", "1234"), false},
		{"regex inverted", state.HeaderMatcher{Name: "x", Kind: state.HeaderRegex, String: state.StringMatcher{Kind: state.StringRegex, Regex: full(`\d{3}`)}, Invert: true}, get("h", "/", "x", "1234"), true},
		{"range in", state.HeaderMatcher{Name: "x", Kind: state.HeaderRange, RangeStart: -10, RangeEnd: 0}, get("h", "/", "x", "-1"), true},
		{"range start inclusive", state.HeaderMatcher{Name: "x", Kind: state.HeaderRange, RangeStart: -10, RangeEnd: 0}, get("h", "/", "x", "-10"), true},
		{"range end exclusive", state.HeaderMatcher{Name: "x", Kind: state.HeaderRange, RangeStart: -10, RangeEnd: 0}, get("h", "/", "x", "0"), false},
		{"range below", state.HeaderMatcher{Name: "x", Kind: state.HeaderRange, RangeStart: -10, RangeEnd: 0}, get("h", "/", "x", "-11"), false},
		// "The range [-10,0) will match the value -1, so it will not match when inverted."
		{"range inverted", state.HeaderMatcher{Name: "x", Kind: state.HeaderRange, RangeStart: -10, RangeEnd: 0, Invert: true}, get("h", "/", "x", "-1"), false},
		{"range not a number", state.HeaderMatcher{Name: "x", Kind: state.HeaderRange, RangeStart: 0, RangeEnd: 10}, get("h", "/", "x", "5a"), false},
		{"range plus sign", state.HeaderMatcher{Name: "x", Kind: state.HeaderRange, RangeStart: 0, RangeEnd: 10}, get("h", "/", "x", "+5"), true},
		{"range spaces", state.HeaderMatcher{Name: "x", Kind: state.HeaderRange, RangeStart: 0, RangeEnd: 10}, get("h", "/", "x", " 5 "), true},
		{"range overflow", state.HeaderMatcher{Name: "x", Kind: state.HeaderRange, RangeStart: 0, RangeEnd: 10}, get("h", "/", "x", "99999999999999999999"), false},
		{"range empty", state.HeaderMatcher{Name: "x", Kind: state.HeaderRange, RangeStart: 0, RangeEnd: 10}, get("h", "/", "x", ""), false},
		// treat_missing_header_as_empty example from the proto docs: missing
		// header treated as "", which is not in [0,10), so inverted it matches.
		{"range missing as empty inverted", state.HeaderMatcher{Name: "x", Kind: state.HeaderRange, RangeStart: 0, RangeEnd: 10, Invert: true, TreatMissingAsEmpty: true}, get("h", "/"), true},
		{"range missing inverted", state.HeaderMatcher{Name: "x", Kind: state.HeaderRange, RangeStart: 0, RangeEnd: 10, Invert: true}, get("h", "/"), false},
		{"present", state.HeaderMatcher{Name: "x", Kind: state.HeaderPresent, Present: true}, get("h", "/", "x", ""), true},
		{"present missing", state.HeaderMatcher{Name: "x", Kind: state.HeaderPresent, Present: true}, get("h", "/"), false},
		{"absent", state.HeaderMatcher{Name: "x", Kind: state.HeaderPresent, Present: false}, get("h", "/"), true},
		{"absent but present", state.HeaderMatcher{Name: "x", Kind: state.HeaderPresent, Present: false}, get("h", "/", "x", "1"), false},
		{"present inverted missing", state.HeaderMatcher{Name: "x", Kind: state.HeaderPresent, Present: true, Invert: true}, get("h", "/"), true},
		{"present inverted present", state.HeaderMatcher{Name: "x", Kind: state.HeaderPresent, Present: true, Invert: true}, get("h", "/", "x", "1"), false},
		{"absent inverted present", state.HeaderMatcher{Name: "x", Kind: state.HeaderPresent, Present: false, Invert: true}, get("h", "/", "x", "1"), true},
		{"absent inverted missing", state.HeaderMatcher{Name: "x", Kind: state.HeaderPresent, Present: false, Invert: true}, get("h", "/"), false},
		{"present missing as empty", state.HeaderMatcher{Name: "x", Kind: state.HeaderPresent, Present: true, TreatMissingAsEmpty: true}, get("h", "/"), true},
		{"prefix", state.HeaderMatcher{Name: "x", Kind: state.HeaderPrefix, String: state.StringMatcher{Kind: state.StringPrefix, Value: "ab"}}, get("h", "/", "x", "abc"), true},
		{"suffix", state.HeaderMatcher{Name: "x", Kind: state.HeaderSuffix, String: state.StringMatcher{Kind: state.StringSuffix, Value: "bc"}}, get("h", "/", "x", "abc"), true},
		{"contains", state.HeaderMatcher{Name: "x", Kind: state.HeaderContains, String: state.StringMatcher{Kind: state.StringContains, Value: "b"}}, get("h", "/", "x", "abc"), true},
		{"string ignore case", state.HeaderMatcher{Name: "x", Kind: state.HeaderString, String: state.StringMatcher{Kind: state.StringExact, Value: "abc", IgnoreCase: true}}, get("h", "/", "x", "ABC"), true},
		{"exact empty missing as empty", state.HeaderMatcher{Name: "x", Kind: state.HeaderExact, String: exact(""), TreatMissingAsEmpty: true}, get("h", "/"), true},
		{"pseudo authority", state.HeaderMatcher{Name: ":authority", Kind: state.HeaderExact, String: exact("h")}, get("h", "/"), true},
		{"pseudo method", state.HeaderMatcher{Name: ":method", Kind: state.HeaderExact, String: exact("GET")}, get("h", "/"), true},
	}
	for _, tt := range tests {
		if got := MatchHeader(&tt.h, tt.r); got != tt.want {
			t.Errorf("%s: MatchHeader = %v, want %v", tt.name, got, tt.want)
		}
		// The same matcher inside a route must give the same answer.
		rt := &state.Route{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true, Headers: []state.HeaderMatcher{tt.h}}}
		if got := MatchRoute(rt, tt.r); got != tt.want {
			t.Errorf("%s: MatchRoute = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestMatchHeadersAllMustMatch(t *testing.T) {
	rt := &state.Route{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true, Headers: []state.HeaderMatcher{
		{Name: "a", Kind: state.HeaderPresent, Present: true},
		{Name: "b", Kind: state.HeaderPresent, Present: true},
	}}}
	if MatchRoute(rt, get("h", "/", "a", "1")) {
		t.Error("one of two header matchers held, route matched")
	}
	if !MatchRoute(rt, get("h", "/", "a", "1", "b", "2")) {
		t.Error("both header matchers held, route did not match")
	}
}

func TestMatchQueryParams(t *testing.T) {
	sm := func(k state.StringMatchKind, v string) *state.StringMatcher {
		return &state.StringMatcher{Kind: k, Value: v}
	}
	tests := []struct {
		name string
		q    state.QueryParamMatcher
		path string
		want bool
	}{
		{"exact", state.QueryParamMatcher{Name: "a", String: sm(state.StringExact, "1")}, "/p?a=1", true},
		{"exact other value", state.QueryParamMatcher{Name: "a", String: sm(state.StringExact, "1")}, "/p?a=2", false},
		{"second param", state.QueryParamMatcher{Name: "b", String: sm(state.StringExact, "2")}, "/p?a=1&b=2", true},
		{"first occurrence wins", state.QueryParamMatcher{Name: "a", String: sm(state.StringExact, "2")}, "/p?a=1&a=2", false},
		{"missing", state.QueryParamMatcher{Name: "a", String: sm(state.StringExact, "")}, "/p?b=1", false},
		{"no query", state.QueryParamMatcher{Name: "a", Present: true}, "/p", false},
		{"absent wanted", state.QueryParamMatcher{Name: "a", Present: false}, "/p?b=1", true},
		{"absent wanted but present", state.QueryParamMatcher{Name: "a", Present: false}, "/p?a=1", false},
		{"present", state.QueryParamMatcher{Name: "a", Present: true}, "/p?a", true},
		{"present empty", state.QueryParamMatcher{Name: "a", Present: true}, "/p?a=", true},
		{"no '=' is empty value", state.QueryParamMatcher{Name: "a", String: sm(state.StringExact, "")}, "/p?a", true},
		{"not decoded", state.QueryParamMatcher{Name: "a", String: sm(state.StringExact, "x y")}, "/p?a=x%20y", false},
		{"raw value", state.QueryParamMatcher{Name: "a", String: sm(state.StringExact, "x%20y")}, "/p?a=x%20y", true},
		{"name prefix not a match", state.QueryParamMatcher{Name: "a", Present: true}, "/p?ab=1", false},
		{"prefix matcher", state.QueryParamMatcher{Name: "a", String: sm(state.StringPrefix, "ab")}, "/p?a=abc", true},
		{"ignore case", state.QueryParamMatcher{Name: "a", String: &state.StringMatcher{Kind: state.StringExact, Value: "abc", IgnoreCase: true}}, "/p?a=ABC", true},
		{"value with '='", state.QueryParamMatcher{Name: "a", String: sm(state.StringExact, "b=c")}, "/p?a=b=c", true},
	}
	for _, tt := range tests {
		rt := &state.Route{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true, QueryParams: []state.QueryParamMatcher{tt.q}}}
		if got := MatchRoute(rt, get("h", tt.path)); got != tt.want {
			t.Errorf("%s: path %q: got %v, want %v", tt.name, tt.path, got, tt.want)
		}
	}
}

func TestMatchGRPC(t *testing.T) {
	rt := &state.Route{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true, GRPC: true}}
	tests := []struct {
		ct   string
		want bool
	}{
		{"application/grpc", true},
		{"application/grpc+proto", true},
		{"application/grpc;charset=utf-8", true},
		{"application/grpc-web", false},
		{"application/grpcx", false},
		{"application/json", false},
		{"", false},
	}
	for _, tt := range tests {
		r := get("h", "/svc/M")
		if tt.ct != "" {
			r.hdr["content-type"] = tt.ct
		}
		if got := MatchRoute(rt, r); got != tt.want {
			t.Errorf("content-type %q: got %v, want %v", tt.ct, got, tt.want)
		}
	}
}

func TestMatchString(t *testing.T) {
	tests := []struct {
		m    *state.StringMatcher
		s    string
		want bool
	}{
		{nil, "x", true},
		{&state.StringMatcher{Kind: state.StringExact, Value: "abc"}, "abc", true},
		{&state.StringMatcher{Kind: state.StringExact, Value: "abc"}, "abcd", false},
		{&state.StringMatcher{Kind: state.StringExact, Value: "abc", IgnoreCase: true}, "aBC", true},
		{&state.StringMatcher{Kind: state.StringExact, Value: ""}, "", true},
		{&state.StringMatcher{Kind: state.StringPrefix, Value: "ab"}, "abc", true},
		{&state.StringMatcher{Kind: state.StringPrefix, Value: "ab"}, "Abc", false},
		{&state.StringMatcher{Kind: state.StringPrefix, Value: "ab", IgnoreCase: true}, "ABc", true},
		{&state.StringMatcher{Kind: state.StringPrefix, Value: "abcd", IgnoreCase: true}, "abc", false},
		{&state.StringMatcher{Kind: state.StringSuffix, Value: "bc"}, "abc", true},
		{&state.StringMatcher{Kind: state.StringSuffix, Value: "bc"}, "aBC", false},
		{&state.StringMatcher{Kind: state.StringSuffix, Value: "bc", IgnoreCase: true}, "aBC", true},
		{&state.StringMatcher{Kind: state.StringContains, Value: "b"}, "abc", true},
		{&state.StringMatcher{Kind: state.StringContains, Value: "B"}, "abc", false},
		{&state.StringMatcher{Kind: state.StringContains, Value: "B", IgnoreCase: true}, "abc", true},
		{&state.StringMatcher{Kind: state.StringContains, Value: "", IgnoreCase: true}, "", true},
		{&state.StringMatcher{Kind: state.StringContains, Value: "xyz", IgnoreCase: true}, "xy", false},
		// ASCII-only folding, like Envoy: the Kelvin sign is not 'k'.
		{&state.StringMatcher{Kind: state.StringExact, Value: "k", IgnoreCase: true}, "\u212a", false},
		{&state.StringMatcher{Kind: state.StringRegex, Regex: full(`a.c`)}, "abc", true},
		{&state.StringMatcher{Kind: state.StringRegex, Regex: full(`a.c`)}, "xabc", false},
		{&state.StringMatcher{Kind: state.StringRegex}, "abc", false},
		{&state.StringMatcher{Kind: 99}, "abc", false},
	}
	for i, tt := range tests {
		if got := MatchString(tt.m, tt.s); got != tt.want {
			t.Errorf("#%d %+v on %q: got %v, want %v", i, tt.m, tt.s, got, tt.want)
		}
	}
}
