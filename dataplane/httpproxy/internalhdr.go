package httpproxy

import (
	"net/netip"

	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// internal_only_headers: a route configuration may name headers that only
// internal clients may send; on a request from an external client they are
// removed before routing and filters see the request, so an outsider can
// neither pick a route nor pass a filter with them.
//
// Internal is Envoy's default classification of the downstream address:
// RFC 1918, loopback or ULA (fc00::/7). Envoy's XFF-based variant (without
// use_remote_address) and internal_address_config are not modelled.

// headerRemover is implemented by the request views of both codecs.
type headerRemover interface {
	// removeHeaders deletes the named headers; lower holds the names in
	// lower case, canon the same names in net/http's canonical form.
	removeHeaders(lower, canon []string)
}

// stripInternalOnly removes rc's internal-only headers from r unless the
// client is internal. Nothing is done per request when the list is empty.
func stripInternalOnly(rc *state.RouteConfig, r policy.Request, info *ConnInfo) {
	if rc == nil || len(rc.InternalOnlyHeaders) == 0 {
		return
	}
	if info != nil && internalAddr(info.Remote.Addr()) {
		return
	}
	if hr, ok := r.(headerRemover); ok {
		hr.removeHeaders(rc.InternalOnlyHeaders, rc.InternalOnlyHeaderKeys)
	}
}

// internalAddr reports whether a downstream address is internal: private
// (RFC 1918, ULA) or loopback. An invalid address (no IP peer) is not.
func internalAddr(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() || a.IsPrivate()
}

func (r *h1Request) removeHeaders(lower, _ []string) {
	for _, n := range lower {
		r.hdr.del(n)
	}
}

func (q *h2Request) removeHeaders(_, canon []string) {
	for _, k := range canon {
		delete(q.r.Header, k)
	}
}
