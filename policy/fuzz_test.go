package policy

import (
	"regexp"
	"strings"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func fuzzConfig() *state.RouteConfig {
	route := func(name string, m state.RouteMatch) *state.Route { return &state.Route{Name: name, Match: m} }
	return &state.RouteConfig{VirtualHosts: []*state.VirtualHost{
		{Name: "exact", Domains: []string{"a.com", "a.com:8080", "[::1]:80"}, Routes: []*state.Route{
			route("exact", state.RouteMatch{Kind: state.PathExact, Path: "/x", CaseSensitive: true}),
			route("sep", state.RouteMatch{Kind: state.PathSeparatedPrefix, Path: "/api", CaseSensitive: false}),
			route("re", state.RouteMatch{Kind: state.PathRegex, Regex: full(`/v[0-9]+/.*`)}),
			route("q", state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true,
				QueryParams: []state.QueryParamMatcher{{Name: "k", Present: true}}}),
		}},
		{Name: "suffix", Domains: []string{"*.a.com", "*-b.a.com"}, Routes: []*state.Route{
			route("p", state.RouteMatch{Kind: state.PathPrefix, Path: "/p", CaseSensitive: true}),
		}},
		{Name: "prefix", Domains: []string{"a.*", "www.a.*"}, Routes: []*state.Route{
			route("any", state.RouteMatch{Kind: state.PathPrefix, Path: "", CaseSensitive: true}),
		}},
		{Name: "default", Domains: []string{"*"}, Routes: []*state.Route{
			route("root", state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true}),
		}},
	}}
}

// FuzzSelectRoute checks SelectRoute's invariants on arbitrary authorities
// and paths: never panics, picks the first matching route, agrees with
// SelectVirtualHost, and ignores ASCII case in the authority.
func FuzzSelectRoute(f *testing.F) {
	rc := fuzzConfig()
	for _, s := range [][2]string{
		{"a.com", "/x"}, {"A.COM:8080", "/API/y"}, {"x-b.a.com", "/p?q"}, {"a.org", "/"},
		{"[::1]:80", "/v1/z"}, {"", ""}, {":", "?"}, {"*", "#"}, {"a.com:", "/?k"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, authority, path string) {
		r := get(authority, path)
		vh, rt := SelectRoute(rc, r)
		if vh == nil {
			t.Fatalf("authority %q: no vhost despite a \"*\" domain", authority)
		}
		if got := SelectVirtualHost(rc, authority); got != vh {
			t.Fatalf("SelectVirtualHost(%q) = %s, SelectRoute chose %s", authority, got.Name, vh.Name)
		}
		if isASCII(authority) {
			if got := SelectVirtualHost(rc, strings.ToUpper(authority)); got != vh {
				t.Fatalf("upper-cased %q picked %s, want %s", authority, got.Name, vh.Name)
			}
		}
		for _, cand := range vh.Routes {
			if cand == rt {
				break
			}
			if MatchRoute(cand, r) {
				t.Fatalf("route %s matches %q but %v was chosen", cand.Name, path, rt)
			}
		}
		if rt != nil && !MatchRoute(rt, r) {
			t.Fatalf("chosen route %s does not match %q", rt.Name, path)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// FuzzRewritePath checks that rewrites swap exactly the matched part and
// never touch the query string.
func FuzzRewritePath(f *testing.F) {
	for _, s := range [][3]string{
		{"/api", "/v2", "/api/x?y=1"}, {"/", "", "/"}, {"/a", "/b", "/a?/a"}, {"/é", "/e", "/é/?"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	re := regexp.MustCompile(`[aeiou]+`)
	f.Fuzz(func(t *testing.T, prefix, rewrite, path string) {
		rt := &state.Route{Match: state.RouteMatch{Kind: state.PathPrefix, Path: prefix, CaseSensitive: true}}
		if MatchRoute(rt, get("h", path)) && rewrite != "" {
			got := RewritePath(rt, &state.RouteAction{PrefixRewrite: rewrite}, path)
			if want := rewrite + path[len(prefix):]; got != want {
				t.Fatalf("prefix %q -> %q on %q: got %q, want %q", prefix, rewrite, path, got, want)
			}
		}
		got := RewritePath(rt, &state.RouteAction{RegexRewrite: re, RegexSubstitution: "_"}, path)
		tail := path[len(stripQuery(path)):]
		if !strings.HasSuffix(got, tail) {
			t.Fatalf("regex rewrite of %q lost the query/fragment %q: %q", path, tail, got)
		}
		if re.MatchString(got[:len(got)-len(tail)]) {
			t.Fatalf("regex rewrite of %q left a match in %q", path, got)
		}
		if got := RewritePath(rt, &state.RouteAction{}, path); got != path {
			t.Fatalf("no rewrite changed %q to %q", path, got)
		}
	})
}
