package policy

import (
	"net/netip"

	"github.com/meshlet/meshlet/state"
)

// Request is the view of a request that routing needs. Implementations wrap
// the HTTP/1.1 codec's request and *http.Request for HTTP/2.
type Request interface {
	// Authority is the Host header / :authority, possibly with a port.
	Authority() string
	// Path is the request target in origin form, including any query.
	Path() string
	// Method is the request method, upper case.
	Method() string
	// Header returns the value of the named header (name is lower-case).
	// Several values are joined with ",". Pseudo headers ":authority",
	// ":path", ":method" and ":scheme" are answered too.
	Header(name string) (value string, ok bool)
}

// SelectRoute finds the virtual host for the request's authority and the
// first route in it that matches. route is nil when nothing matches (404 NR);
// vh is nil when no virtual host matches.
func SelectRoute(rc *state.RouteConfig, r Request) (vh *state.VirtualHost, route *state.Route) {
	panic("policy.SelectRoute: not implemented")
}

// PickCluster returns the cluster a route action sends to. rnd is a uniformly
// random number used for weighted_clusters. For cluster_header the named
// header's value is returned ("" when missing). wc is the chosen weighted
// cluster entry (nil unless weighted).
func PickCluster(a *state.RouteAction, r Request, rnd uint64) (cluster string, wc *state.WeightedCluster) {
	panic("policy.PickCluster: not implemented")
}

// PickWeighted picks one of ws by weight (total is their sum) with rnd.
// tcp_proxy uses it too.
func PickWeighted(ws []state.WeightedCluster, total uint64, rnd uint64) *state.WeightedCluster {
	panic("policy.PickWeighted: not implemented")
}

// RewritePath applies prefix_rewrite or regex_rewrite of a to path (which
// includes the query; only the path part is rewritten). It returns path
// unchanged when neither is set.
func RewritePath(route *state.Route, a *state.RouteAction, path string) string {
	panic("policy.RewritePath: not implemented")
}

// RewriteHost returns the new authority for the upstream request and true,
// or "", false when the host is kept. upstreamHost is the picked endpoint's
// hostname for auto_host_rewrite ("" when unknown).
func RewriteHost(a *state.RouteAction, r Request, upstreamHost string) (string, bool) {
	panic("policy.RewriteHost: not implemented")
}

// RedirectLocation builds the Location header for a redirect route.
// scheme is the downstream scheme ("http" or "https").
func RedirectLocation(route *state.Route, rd *state.RedirectAction, scheme string, r Request) string {
	panic("policy.RedirectLocation: not implemented")
}

// Mutations returns the header mutations that apply to a request, most
// specific first: weighted cluster, route, virtual host, route config.
// Request headers are applied in reverse of this order when appending (so
// the most specific wins with overwrite actions) — see ApplyOrder.
func Mutations(rc *state.RouteConfig, vh *state.VirtualHost, route *state.Route, wc *state.WeightedCluster) []*state.HeaderMutation {
	panic("policy.Mutations: not implemented")
}

// HashRequest computes the request hash from the route's hash policies.
// ok is false when no policy produced a value.
func HashRequest(policies []state.HashPolicy, r Request, source netip.Addr) (hash uint64, ok bool) {
	panic("policy.HashRequest: not implemented")
}

// MatchString evaluates a StringMatcher.
func MatchString(m *state.StringMatcher, s string) bool {
	panic("policy.MatchString: not implemented")
}

// FormatValue expands the supported %VAR% formatters in a header value.
type FormatContext struct {
	DownstreamRemote netip.AddrPort
	DownstreamLocal  netip.AddrPort
	UpstreamRemote   string
	Protocol         string // "HTTP/1.1", "HTTP/2"
	Hostname         string
}

// FormatValue expands %VAR% formatters in v; values without '%' are
// returned as is without allocating.
func FormatValue(v string, fc *FormatContext) string {
	panic("policy.FormatValue: not implemented")
}
