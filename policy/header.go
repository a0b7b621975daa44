package policy

import "github.com/meshlet/meshlet/state"

// Mutations returns the non-empty header mutations that apply to a request
// in the order the proxy must apply them: weighted cluster, route, virtual
// host, route configuration.
//
// This is Envoy's default (most_specific_header_mutations_wins=false): the
// route_components.proto docs say request_headers_to_add at the route level
// are processed before those of the enclosing virtual host, which come
// before the route configuration's. Applying in this order means that for
// OverwriteIfExistsOrAdd the least specific level (route configuration) has
// the last word, and AppendIfExistsOrAdd values appear most specific first.
// Within one mutation the proxy applies RequestRemove before RequestAdd, as
// Envoy's HeaderParser does. The same order holds for response headers.
func Mutations(rc *state.RouteConfig, vh *state.VirtualHost, route *state.Route, wc *state.WeightedCluster) []*state.HeaderMutation {
	var buf [4]*state.HeaderMutation
	out := AppendMutations(buf[:0], rc, vh, route, wc)
	if len(out) == 0 {
		return nil
	}
	return append([]*state.HeaderMutation(nil), out...)
}

// AppendMutations is Mutations appending to dst, so the proxy can reuse a
// per-stream array and stay allocation-free.
func AppendMutations(dst []*state.HeaderMutation, rc *state.RouteConfig, vh *state.VirtualHost, route *state.Route, wc *state.WeightedCluster) []*state.HeaderMutation {
	add := func(m *state.HeaderMutation) {
		if !m.Empty() {
			dst = append(dst, m)
		}
	}
	if wc != nil {
		add(&wc.Headers)
	}
	if route != nil {
		add(&route.Headers)
	}
	if vh != nil {
		add(&vh.Headers)
	}
	if rc != nil {
		add(&rc.Headers)
	}
	return dst
}
