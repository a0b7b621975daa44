package policy

import (
	"regexp"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestRewritePath(t *testing.T) {
	prefix := func(p string, cs bool) *state.Route {
		return &state.Route{Match: state.RouteMatch{Kind: state.PathPrefix, Path: p, CaseSensitive: cs}}
	}
	tests := []struct {
		name  string
		route *state.Route
		a     *state.RouteAction
		path  string
		want  string
	}{
		{"none", prefix("/", true), &state.RouteAction{}, "/a?b", "/a?b"},
		{"nil action", prefix("/", true), nil, "/a?b", "/a?b"},
		{"prefix", prefix("/prefix", true), &state.RouteAction{PrefixRewrite: "/"}, "/prefix/etc?q=1", "//etc?q=1"},
		// Envoy docs: prefix "/prefix/" with rewrite "/" turns /prefix/etc into /etc.
		{"prefix trailing slash", prefix("/prefix/", true), &state.RouteAction{PrefixRewrite: "/"}, "/prefix/etc", "/etc"},
		{"prefix to longer", prefix("/api", true), &state.RouteAction{PrefixRewrite: "/v2/api"}, "/api/x", "/v2/api/x"},
		{"prefix case-insensitive keeps rest", prefix("/api", false), &state.RouteAction{PrefixRewrite: "/b"}, "/API/Rest", "/b/Rest"},
		{"prefix keeps query", prefix("/a", true), &state.RouteAction{PrefixRewrite: "/b"}, "/a?x=/a", "/b?x=/a"},
		{"sep prefix", &state.Route{Match: state.RouteMatch{Kind: state.PathSeparatedPrefix, Path: "/api", CaseSensitive: true}},
			&state.RouteAction{PrefixRewrite: "/v1"}, "/api/x?y", "/v1/x?y"},
		{"exact replaces path", &state.Route{Match: state.RouteMatch{Kind: state.PathExact, Path: "/old", CaseSensitive: true}},
			&state.RouteAction{PrefixRewrite: "/new"}, "/old?k=v", "/new?k=v"},
		{"regex route replaces path", &state.Route{Match: state.RouteMatch{Kind: state.PathRegex, Regex: full(`/o.*`)}},
			&state.RouteAction{PrefixRewrite: "/n"}, "/old/x?k", "/n?k"},
		// Envoy docs examples for regex_rewrite.
		{"regex docs 1", prefix("/", true), &state.RouteAction{RegexRewrite: regexp.MustCompile(`^/service/([^/]+)(/.*)$`), RegexSubstitution: "${2}/instance/${1}"},
			"/service/foo/v1/api", "/v1/api/instance/foo"},
		{"regex docs 2 replaces all", prefix("/", true), &state.RouteAction{RegexRewrite: regexp.MustCompile(`one`), RegexSubstitution: "two"},
			"/xxx/one/yyy/one/zzz", "/xxx/two/yyy/two/zzz"},
		{"regex docs 3 case-insensitive", prefix("/", true), &state.RouteAction{RegexRewrite: regexp.MustCompile(`(?i)/xxx/`), RegexSubstitution: "/yyy/"},
			"/aaa/XxX/bbb", "/aaa/yyy/bbb"},
		{"regex keeps query", prefix("/", true), &state.RouteAction{RegexRewrite: regexp.MustCompile(`a`), RegexSubstitution: "b"},
			"/a/a?a=a", "/b/b?a=a"},
		{"regex no match", prefix("/", true), &state.RouteAction{RegexRewrite: regexp.MustCompile(`zzz`), RegexSubstitution: "b"},
			"/a?q", "/a?q"},
		{"prefix beats regex", prefix("/a", true), &state.RouteAction{PrefixRewrite: "/p", RegexRewrite: regexp.MustCompile(`a`), RegexSubstitution: "b"},
			"/a/a", "/p/a"},
	}
	for _, tt := range tests {
		if got := RewritePath(tt.route, tt.a, tt.path); got != tt.want {
			t.Errorf("%s: RewritePath(%q) = %q, want %q", tt.name, tt.path, got, tt.want)
		}
	}
}

func TestRewriteHost(t *testing.T) {
	tests := []struct {
		name     string
		a        *state.RouteAction
		r        *req
		upstream string
		want     string
		ok       bool
	}{
		{"none", &state.RouteAction{}, get("h", "/"), "up", "", false},
		{"nil", nil, get("h", "/"), "up", "", false},
		{"literal", &state.RouteAction{HostRewriteLiteral: "new.host"}, get("h", "/"), "up", "new.host", true},
		{"header", &state.RouteAction{HostRewriteHeader: "x-host"}, get("h", "/", "x-host", "from.header"), "", "from.header", true},
		{"header missing", &state.RouteAction{HostRewriteHeader: "x-host"}, get("h", "/"), "", "", false},
		{"header empty", &state.RouteAction{HostRewriteHeader: "x-host"}, get("h", "/", "x-host", ""), "", "", false},
		{"auto", &state.RouteAction{AutoHostRewrite: true}, get("h", "/"), "ep.example", "ep.example", true},
		{"auto unknown", &state.RouteAction{AutoHostRewrite: true}, get("h", "/"), "", "", false},
	}
	for _, tt := range tests {
		got, ok := RewriteHost(tt.a, tt.r, tt.upstream)
		if got != tt.want || ok != tt.ok {
			t.Errorf("%s: got %q, %v; want %q, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}
