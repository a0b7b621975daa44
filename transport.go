package meshlet

import (
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync/atomic"

	"github.com/meshlet/meshlet/state"
)

// RoundTripper returns an http.RoundTripper that sends requests through
// the HTTP data path in process (see the package doc). It starts the
// Server on its first request and waits, bounded by the request's
// context, for the first xDS configuration. Local replies (404 no route,
// 503 no healthy upstream, fault aborts, RBAC denials) are responses, not
// errors, as through the proxy.
func (s *Server) RoundTripper() http.RoundTripper { return transport{s} }

type transport struct{ s *Server }

func (t transport) RoundTrip(req *http.Request) (*http.Response, error) {
	rt, err := t.s.use(req.Context())
	if err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	return rt.http.RoundTrip(req, rt.hcmFor(req), nil)
}

// routeIndex caches, per configuration snapshot, which connection manager
// serves each destination port, so the per-request lookup is one atomic
// load and a map read.
type routeIndex struct {
	cur atomic.Pointer[routeTable]
}

type routeTable struct {
	snap *state.Snapshot
	// fixed is the manager every request uses (RouteConfig or
	// OutboundListener set); nil routes by port.
	fixed  *state.HTTPConnectionManager
	byPort map[uint32]*state.HTTPConnectionManager
}

// hcmFor returns the connection manager that routes req.
func (rt *runtime) hcmFor(req *http.Request) *state.HTTPConnectionManager {
	snap := rt.store.Load()
	t := rt.routes.cur.Load()
	if t == nil || t.snap != snap {
		t = rt.buildRoutes(snap)
		rt.routes.cur.Store(t)
	}
	if t.fixed != nil {
		return t.fixed
	}
	port := destPort(req)
	if h := t.byPort[port]; h != nil {
		return h
	}
	// No listener for the port: Istio names outbound route configurations
	// after the port. Unknown names route as "no route" (404 NR).
	return &state.HTTPConnectionManager{RDSName: strconv.FormatUint(uint64(port), 10)}
}

// destPort is the request's destination port: explicit, else the
// scheme's default.
func destPort(req *http.Request) uint32 {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if _, p, err := net.SplitHostPort(host); err == nil {
		if n, err := strconv.ParseUint(p, 10, 16); err == nil {
			return uint32(n)
		}
	}
	if req.URL.Scheme == "https" {
		return 443
	}
	return 80
}

// buildRoutes indexes snap's HTTP connection managers.
func (rt *runtime) buildRoutes(snap *state.Snapshot) *routeTable {
	t := &routeTable{snap: snap, byPort: map[uint32]*state.HTTPConnectionManager{}}
	names := make([]string, 0, len(snap.Listeners))
	for n := range snap.Listeners {
		names = append(names, n)
	}
	slices.Sort(names) // deterministic choice when listeners overlap
	o := rt.opts
	switch {
	case o.RouteConfig != "":
		for _, n := range names {
			if h := hcmUsingRoute(snap.Listeners[n], o.RouteConfig); h != nil {
				t.fixed = h
				return t
			}
		}
		t.fixed = &state.HTTPConnectionManager{RDSName: o.RouteConfig}
		return t
	case o.OutboundListener != "":
		if l := snap.Listeners[o.OutboundListener]; l != nil {
			t.fixed = firstHTTP(l, 0)
		}
		if t.fixed == nil {
			// Fail like a missing route, not with a nil manager.
			t.fixed = &state.HTTPConnectionManager{RDSName: ""}
		}
		return t
	}
	// A listener bound to the port wins over a chain of another listener
	// matching the port (Istio's virtual outbound listener).
	for _, n := range names {
		l := snap.Listeners[n]
		p := uint32(l.Address.Port())
		if _, ok := t.byPort[p]; !ok && p != 0 {
			if h := firstHTTP(l, p); h != nil {
				t.byPort[p] = h
			}
		}
	}
	for _, n := range names {
		for _, c := range chains(snap.Listeners[n]) {
			p := c.Match.DestinationPort
			if _, ok := t.byPort[p]; !ok && p != 0 && c.HTTP != nil {
				t.byPort[p] = c.HTTP
			}
		}
	}
	return t
}

// chains is l's filter chains followed by its default chain.
func chains(l *state.Listener) []*state.FilterChain {
	cs := l.FilterChains
	if l.DefaultFilterChain != nil {
		cs = append(slices.Clip(cs), l.DefaultFilterChain)
	}
	return cs
}

// firstHTTP is l's first HTTP chain that accepts destination port (0:
// any chain).
func firstHTTP(l *state.Listener, port uint32) *state.HTTPConnectionManager {
	for _, c := range chains(l) {
		if c.HTTP != nil && (port == 0 || c.Match.DestinationPort == 0 || c.Match.DestinationPort == port) {
			return c.HTTP
		}
	}
	return nil
}

// hcmUsingRoute is l's connection manager routing with the named route
// configuration (by RDS or inline), nil when none does.
func hcmUsingRoute(l *state.Listener, name string) *state.HTTPConnectionManager {
	for _, c := range chains(l) {
		if h := c.HTTP; h != nil && (h.RDSName == name || (h.RouteConfig != nil && h.RouteConfig.Name == name)) {
			return h
		}
	}
	return nil
}
