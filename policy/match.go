package policy

import (
	"strconv"
	"strings"

	"github.com/meshlet/meshlet/state"
)

// MatchRoute reports whether route's match clause accepts r: the path rule,
// then every header matcher, every query parameter matcher and the gRPC
// restriction must hold (Envoy's RouteMatch is a conjunction).
func MatchRoute(route *state.Route, r Request) bool {
	if route == nil {
		return false
	}
	m := &route.Match
	if !matchPath(m, r.Path()) {
		return false
	}
	if m.GRPC && !isGRPC(r) {
		return false
	}
	for i := range m.Headers {
		if !MatchHeader(&m.Headers[i], r) {
			return false
		}
	}
	if len(m.QueryParams) > 0 {
		query := rawQuery(r.Path())
		for i := range m.QueryParams {
			if !matchQueryParam(&m.QueryParams[i], query) {
				return false
			}
		}
	}
	return true
}

// matchPath applies the path rule. Per route_components.proto: prefix is
// compared with the beginning of :path as sent (query included), while
// path, safe_regex and path_separated_prefix look at :path with the query
// string removed.
func matchPath(m *state.RouteMatch, path string) bool {
	switch m.Kind {
	case state.PathPrefix:
		return hasPrefixCase(path, m.Path, m.CaseSensitive)
	case state.PathExact:
		p := stripQuery(path)
		if m.CaseSensitive {
			return p == m.Path
		}
		return equalFoldASCII(p, m.Path)
	case state.PathRegex:
		// The decoder compiles safe_regex anchored at both ends, so a plain
		// match is a full match of the path.
		return m.Regex != nil && m.Regex.MatchString(stripQuery(path))
	case state.PathSeparatedPrefix:
		p := stripQuery(path)
		if !hasPrefixCase(p, m.Path, m.CaseSensitive) {
			return false
		}
		// The prefix must end at a segment boundary: "/api" matches "/api"
		// and "/api/x" but not "/apix".
		return len(p) == len(m.Path) || p[len(m.Path)] == '/'
	}
	return false
}

func hasPrefixCase(s, prefix string, caseSensitive bool) bool {
	if caseSensitive {
		return strings.HasPrefix(s, prefix)
	}
	return hasPrefixFold(s, prefix)
}

// stripQuery removes the query string and any fragment.
func stripQuery(path string) string {
	for i := 0; i < len(path); i++ {
		if path[i] == '?' || path[i] == '#' {
			return path[:i]
		}
	}
	return path
}

// rawQuery returns what follows the first '?' ("" when none).
func rawQuery(path string) string {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		return path[i+1:]
	}
	return ""
}

// isGRPC mirrors Envoy's Grpc::Common::hasGrpcContentType: the content type
// is "application/grpc" or starts with "application/grpc+" or
// "application/grpc;".
func isGRPC(r Request) bool {
	ct, ok := r.Header("content-type")
	if !ok {
		return false
	}
	const g = "application/grpc"
	if !strings.HasPrefix(ct, g) {
		return false
	}
	return len(ct) == len(g) || ct[len(g)] == '+' || ct[len(g)] == ';'
}

// MatchHeader evaluates one HeaderMatcher against r with Envoy's rules: a
// missing header (unless TreatMissingAsEmpty) matches only a present_match
// that asks for absence, and invert does not turn a missing header into a
// match for value matchers; otherwise the value matcher's result is XORed
// with Invert.
func MatchHeader(h *state.HeaderMatcher, r Request) bool {
	v, ok := r.Header(h.Name)
	if !ok && !h.TreatMissingAsEmpty {
		if h.Invert {
			return h.Kind == state.HeaderPresent && h.Present
		}
		return h.Kind == state.HeaderPresent && !h.Present
	}
	var match bool
	switch h.Kind {
	case state.HeaderPresent:
		// With TreatMissingAsEmpty a missing header counts as present.
		match = h.Present
	case state.HeaderRange:
		n, err := strconv.ParseInt(strings.Trim(v, " \t\r\n\v\f"), 10, 64)
		match = err == nil && n >= h.RangeStart && n < h.RangeEnd
	default:
		match = MatchString(&h.String, v)
	}
	return match != h.Invert
}

// matchQueryParam mirrors Envoy's QueryParameterMatcher: the first
// occurrence of the parameter is used, its value is compared as it appears
// in the URL (no percent-decoding, as Envoy's route matcher does), and a
// missing parameter never matches a string matcher. A parameter without '='
// has value "". Without a string matcher, present_match holds when presence
// equals Present (Envoy's enable_new_query_param_present_match_behavior, on
// by default): Present=false asks for the parameter to be absent. Decoders
// map a matcher with no specifier to Present=true.
func matchQueryParam(q *state.QueryParamMatcher, query string) bool {
	v, ok := queryValue(query, q.Name)
	if q.String == nil {
		return ok == q.Present
	}
	return ok && MatchString(q.String, v)
}

// queryValue finds the first value of name in a raw query string.
func queryValue(query, name string) (string, bool) {
	for query != "" {
		var pair string
		if i := strings.IndexByte(query, '&'); i >= 0 {
			pair, query = query[:i], query[i+1:]
		} else {
			pair, query = query, ""
		}
		k, v := pair, ""
		if i := strings.IndexByte(pair, '='); i >= 0 {
			k, v = pair[:i], pair[i+1:]
		}
		if k == name {
			return v, true
		}
	}
	return "", false
}

// MatchString evaluates a StringMatcher. IgnoreCase folds ASCII only, as
// Envoy does; it does not apply to regexes (Envoy forbids that combination).
func MatchString(m *state.StringMatcher, s string) bool {
	if m == nil {
		return true
	}
	switch m.Kind {
	case state.StringExact:
		if m.IgnoreCase {
			return equalFoldASCII(s, m.Value)
		}
		return s == m.Value
	case state.StringPrefix:
		if m.IgnoreCase {
			return hasPrefixFold(s, m.Value)
		}
		return strings.HasPrefix(s, m.Value)
	case state.StringSuffix:
		if m.IgnoreCase {
			return hasSuffixFold(s, m.Value)
		}
		return strings.HasSuffix(s, m.Value)
	case state.StringContains:
		if m.IgnoreCase {
			return containsFold(s, m.Value)
		}
		return strings.Contains(s, m.Value)
	case state.StringRegex:
		// Anchored by the decoder: a match is a full match.
		return m.Regex != nil && m.Regex.MatchString(s)
	}
	return false
}
