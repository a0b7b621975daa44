package policy

import (
	"regexp"

	"github.com/meshlet/meshlet/state"
)

// RewritePath applies prefix_rewrite or regex_rewrite of a to path (which
// includes the query; only the path part is rewritten). It returns path
// unchanged when neither is set.
//
// prefix_rewrite swaps the matched part: the prefix for prefix and
// path_separated_prefix routes (its length, since a case-insensitive match
// may differ in case), the whole path for path and safe_regex routes; what
// follows (including the query) is kept. regex_rewrite substitutes every
// match in the path without the query, then re-appends the query.
func RewritePath(route *state.Route, a *state.RouteAction, path string) string {
	if a == nil {
		return path
	}
	return rewritePath(route, a.PrefixRewrite, a.RegexRewrite, a.RegexSubstitution, path)
}

func rewritePath(route *state.Route, prefixRewrite string, re *regexp.Regexp, subst string, path string) string {
	if prefixRewrite != "" && route != nil {
		n := matchedLen(&route.Match, path)
		return prefixRewrite + path[n:]
	}
	if re != nil {
		p := stripQuery(path)
		return re.ReplaceAllString(p, subst) + path[len(p):]
	}
	return path
}

// matchedLen is how much of path the route's path rule consumed.
func matchedLen(m *state.RouteMatch, path string) int {
	switch m.Kind {
	case state.PathPrefix, state.PathSeparatedPrefix:
		if len(m.Path) <= len(path) {
			return len(m.Path)
		}
		return len(path)
	default:
		return len(stripQuery(path))
	}
}

// RewriteHost returns the new authority for the upstream request and true,
// or "", false when the host is kept. upstreamHost is the picked endpoint's
// hostname for auto_host_rewrite ("" when unknown). host_rewrite_header keeps
// the host when the header is missing or empty, like Envoy.
func RewriteHost(a *state.RouteAction, r Request, upstreamHost string) (string, bool) {
	if a == nil {
		return "", false
	}
	switch {
	case a.HostRewriteLiteral != "":
		return a.HostRewriteLiteral, true
	case a.HostRewriteHeader != "":
		if v, ok := r.Header(a.HostRewriteHeader); ok && v != "" {
			return v, true
		}
	case a.AutoHostRewrite:
		if upstreamHost != "" {
			return upstreamHost, true
		}
	}
	return "", false
}
