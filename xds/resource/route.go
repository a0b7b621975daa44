package resource

import (
	"errors"
	"fmt"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/meshlet/meshlet/state"
)

// defaultMaxDirectResponseBody is Envoy's max_direct_response_body_size_bytes
// default.
const defaultMaxDirectResponseBody = 4096

// DecodeRouteConfig validates rc and converts it to the state form. The
// error names the route configuration and the field path.
func DecodeRouteConfig(rc *routev3.RouteConfiguration) (*state.RouteConfig, error) {
	out, err := decodeRouteConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("route_configuration %q: %w", rc.GetName(), err)
	}
	return out, nil
}

func decodeRouteConfig(rc *routev3.RouteConfiguration) (*state.RouteConfig, error) {
	out := &state.RouteConfig{
		Name:                       rc.GetName(),
		MaxDirectResponseBodyBytes: defaultMaxDirectResponseBody,
		IgnorePortInHostMatching:   rc.GetIgnorePortInHostMatching(),
	}
	if v := rc.GetMaxDirectResponseBodySizeBytes(); v != nil {
		out.MaxDirectResponseBodyBytes = v.GetValue()
	}
	if rc.GetVhds() != nil {
		return nil, errAt("vhds", "is not supported")
	}
	if len(rc.GetClusterSpecifierPlugins()) > 0 {
		return nil, errAt("cluster_specifier_plugins", "are not supported")
	}
	var err error
	if out.Headers, err = decodeHeaderMutation(rc); err != nil {
		return nil, err
	}
	if out.InternalOnlyHeaders, out.InternalOnlyHeaderKeys, err = decodeInternalOnlyHeaders(rc.GetInternalOnlyHeaders()); err != nil {
		return nil, err
	}
	if out.FilterOverrides, err = decodeFilterOverrides(rc.GetTypedPerFilterConfig()); err != nil {
		return nil, err
	}
	domains := map[string]int{}
	for i, vh := range rc.GetVirtualHosts() {
		v, err := decodeVirtualHost(vh, out.MaxDirectResponseBodyBytes)
		if err != nil {
			return nil, atIndex("virtual_hosts", i, err)
		}
		for j, d := range v.Domains {
			// Envoy rejects duplicates because the winner would depend on
			// map order, i.e. be arbitrary.
			if prev, ok := domains[d]; ok {
				return nil, errAt(fmt.Sprintf("virtual_hosts[%d].domains[%d]", i, j),
					"duplicate domain %q (also in virtual_hosts[%d])", d, prev)
			}
			domains[d] = i
		}
		out.VirtualHosts = append(out.VirtualHosts, v)
	}
	return out, nil
}

func decodeVirtualHost(vh *routev3.VirtualHost, maxBody uint32) (*state.VirtualHost, error) {
	out := &state.VirtualHost{Name: vh.GetName()}
	if vh.GetName() == "" {
		return nil, errAt("name", "is required")
	}
	if len(vh.GetDomains()) == 0 {
		return nil, errAt("domains", "at least one domain is required")
	}
	for i, d := range vh.GetDomains() {
		d = strings.ToLower(d)
		if err := checkDomain(d); err != nil {
			return nil, atIndex("domains", i, err)
		}
		out.Domains = append(out.Domains, d)
	}
	if vh.GetRequireTls() != routev3.VirtualHost_NONE {
		return nil, errAt("require_tls", "%v is not supported", vh.GetRequireTls())
	}
	if vh.GetMatcher() != nil {
		return nil, errAt("matcher", "is not supported; use routes")
	}
	var err error
	if out.Headers, err = decodeHeaderMutation(vh); err != nil {
		return nil, err
	}
	if out.FilterOverrides, err = decodeFilterOverrides(vh.GetTypedPerFilterConfig()); err != nil {
		return nil, err
	}
	if out.RetryPolicy, err = decodeRetryPolicy(vh.GetRetryPolicy()); err != nil {
		return nil, at("retry_policy", err)
	}
	out.IncludeAttemptCount = vh.GetIncludeRequestAttemptCount()
	out.IncludeAttemptCountInResponse = vh.GetIncludeAttemptCountInResponse()
	for i, r := range vh.GetRoutes() {
		route, err := decodeRoute(r, maxBody)
		if err != nil {
			return nil, atIndex("routes", i, err)
		}
		out.Routes = append(out.Routes, route)
	}
	return out, nil
}

// checkDomain accepts "*", exact names and a single wildcard at the start
// ("*.b", "*-b.c") or the end ("a.*"), the forms Envoy's host matching
// understands; "a*b" would silently never match.
func checkDomain(d string) error {
	if d == "" {
		return errors.New("empty domain")
	}
	n := strings.Count(d, "*")
	if n == 0 || d == "*" {
		return nil
	}
	if n > 1 || (!strings.HasPrefix(d, "*") && !strings.HasSuffix(d, "*")) {
		return fmt.Errorf("%q: a wildcard is only allowed at the start or the end", d)
	}
	return nil
}

func decodeRoute(r *routev3.Route, maxBody uint32) (*state.Route, error) {
	out := &state.Route{Name: r.GetName()}
	m, err := decodeRouteMatch(r.GetMatch())
	if err != nil {
		return nil, at("match", err)
	}
	out.Match = m
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		if out.Action, err = decodeRouteAction(a.Route); err != nil {
			return nil, at("route", err)
		}
	case *routev3.Route_Redirect:
		if out.Redirect, err = decodeRedirect(a.Redirect); err != nil {
			return nil, at("redirect", err)
		}
	case *routev3.Route_DirectResponse:
		if out.DirectResponse, err = decodeDirectResponse(a.DirectResponse, maxBody); err != nil {
			return nil, at("direct_response", err)
		}
	case *routev3.Route_NonForwardingAction:
		return nil, errAt("non_forwarding_action", "is not supported")
	case *routev3.Route_FilterAction:
		return nil, errAt("filter_action", "is not supported")
	default:
		return nil, errors.New("action (route, redirect or direct_response) is required")
	}
	if out.Headers, err = decodeHeaderMutation(r); err != nil {
		return nil, err
	}
	if out.FilterOverrides, err = decodeFilterOverrides(r.GetTypedPerFilterConfig()); err != nil {
		return nil, err
	}
	return out, nil
}

func decodeRouteMatch(m *routev3.RouteMatch) (state.RouteMatch, error) {
	out := state.RouteMatch{CaseSensitive: true}
	if m == nil {
		return out, errors.New("is required")
	}
	if cs := m.GetCaseSensitive(); cs != nil {
		out.CaseSensitive = cs.GetValue()
	}
	switch p := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.Kind, out.Path = state.PathPrefix, p.Prefix
	case *routev3.RouteMatch_Path:
		out.Kind, out.Path = state.PathExact, p.Path
	case *routev3.RouteMatch_SafeRegex:
		re, err := compileFullRegex(p.SafeRegex)
		if err != nil {
			// The regexp error already says what is wrong; the field path
			// stops at safe_regex like Envoy's own messages.
			var fe *fieldError
			if errors.As(err, &fe) && fe.path == "regex" {
				err = fe.err
			}
			return out, at("safe_regex", err)
		}
		out.Kind, out.Regex = state.PathRegex, re
	case *routev3.RouteMatch_PathSeparatedPrefix:
		s := p.PathSeparatedPrefix
		if s == "" || strings.ContainsAny(s, "?#") || strings.HasSuffix(s, "/") {
			return out, errAt("path_separated_prefix", "%q must be non-empty, without '?' or '#', and not end in '/'", s)
		}
		out.Kind, out.Path = state.PathSeparatedPrefix, s
	case *routev3.RouteMatch_ConnectMatcher_:
		return out, errAt("connect_matcher", "CONNECT routes are not supported")
	case *routev3.RouteMatch_PathMatchPolicy:
		return out, errAt("path_match_policy", "is not supported")
	default:
		return out, errors.New("path_specifier (prefix, path, safe_regex or path_separated_prefix) is required")
	}
	// A route that should match only a fraction of requests, only some TLS
	// peers or some metadata would match all of them here: reject.
	switch {
	case m.GetRuntimeFraction() != nil:
		return out, errAt("runtime_fraction", "is not supported")
	case m.GetTlsContext() != nil:
		return out, errAt("tls_context", "is not supported")
	case len(m.GetDynamicMetadata()) > 0:
		return out, errAt("dynamic_metadata", "is not supported")
	case len(m.GetFilterState()) > 0:
		return out, errAt("filter_state", "is not supported")
	case len(m.GetCookies()) > 0:
		return out, errAt("cookies", "is not supported")
	}
	for i, h := range m.GetHeaders() {
		hm, err := decodeHeaderMatcher(h)
		if err != nil {
			return out, atIndex("headers", i, err)
		}
		out.Headers = append(out.Headers, hm)
	}
	for i, q := range m.GetQueryParameters() {
		qm, err := decodeQueryParamMatcher(q)
		if err != nil {
			return out, atIndex("query_parameters", i, err)
		}
		out.QueryParams = append(out.QueryParams, qm)
	}
	out.GRPC = m.GetGrpc() != nil
	return out, nil
}

func decodeDirectResponse(d *routev3.DirectResponseAction, maxBody uint32) (*state.DirectResponseAction, error) {
	out := &state.DirectResponseAction{Status: int(d.GetStatus())}
	if out.Status < 200 || out.Status > 599 {
		return nil, errAt("status", "%d is not in [200, 599]", out.Status)
	}
	if d.GetBodyFormat() != nil {
		return nil, errAt("body_format", "is not supported")
	}
	if d.GetBody() != nil {
		b, err := dataSource(d.GetBody())
		if err != nil {
			return nil, at("body", err)
		}
		if uint64(len(b)) > uint64(maxBody) {
			return nil, errAt("body", "%d bytes exceeds max_direct_response_body_size_bytes %d", len(b), maxBody)
		}
		out.Body = b
	}
	return out, nil
}

func decodeRedirect(r *routev3.RedirectAction) (*state.RedirectAction, error) {
	out := &state.RedirectAction{
		HostRedirect: r.GetHostRedirect(),
		StripQuery:   r.GetStripQuery(),
	}
	switch s := r.GetSchemeRewriteSpecifier().(type) {
	case *routev3.RedirectAction_HttpsRedirect:
		if s.HttpsRedirect {
			out.SchemeRedirect = "https"
		}
	case *routev3.RedirectAction_SchemeRedirect:
		out.SchemeRedirect = strings.ToLower(s.SchemeRedirect)
	}
	if p := r.GetPortRedirect(); p > 65535 {
		return nil, errAt("port_redirect", "%d is out of range", p)
	}
	out.PortRedirect = r.GetPortRedirect()
	switch p := r.GetPathRewriteSpecifier().(type) {
	case *routev3.RedirectAction_PathRedirect:
		out.PathRedirect = p.PathRedirect
	case *routev3.RedirectAction_PrefixRewrite:
		out.PrefixRewrite = p.PrefixRewrite
	case *routev3.RedirectAction_RegexRewrite:
		re, err := compileSearchRegex(p.RegexRewrite.GetPattern())
		if err != nil {
			return nil, at("regex_rewrite.pattern", err)
		}
		out.RegexRewrite, out.RegexSubstitution = re, convertSubstitution(p.RegexRewrite.GetSubstitution())
	case *routev3.RedirectAction_PathRewrite:
		return nil, errAt("path_rewrite", "is not supported")
	}
	switch r.GetResponseCode() {
	case routev3.RedirectAction_MOVED_PERMANENTLY:
		out.ResponseCode = 301
	case routev3.RedirectAction_FOUND:
		out.ResponseCode = 302
	case routev3.RedirectAction_SEE_OTHER:
		out.ResponseCode = 303
	case routev3.RedirectAction_TEMPORARY_REDIRECT:
		out.ResponseCode = 307
	case routev3.RedirectAction_PERMANENT_REDIRECT:
		out.ResponseCode = 308
	default:
		return nil, errAt("response_code", "unknown value %d", r.GetResponseCode())
	}
	return out, nil
}

// convertSubstitution turns an RE2-style substitution ("\1", "\\") into a
// Go regexp.Expand template ("${1}", "\"), escaping literal "$".
func convertSubstitution(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '$':
			b.WriteString("$$")
		case c == '\\' && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '9':
			b.WriteString("${" + string(s[i+1]) + "}")
			i++
		case c == '\\' && i+1 < len(s) && s[i+1] == '\\':
			b.WriteByte('\\')
			i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
