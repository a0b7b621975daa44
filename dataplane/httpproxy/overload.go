package httpproxy

import (
	"sync/atomic"

	"github.com/meshlet/meshlet/state"
)

// Envoy's overload manager reply when it sheds a request: 503, the body
// "envoy overloaded", the header x-envoy-overloaded and response flag OM.
const (
	BodyOverloaded   = "envoy overloaded"
	HeaderOverloaded = "x-envoy-overloaded"
	FlagOverload     = "OM"
)

// Overload is the switch between a resource monitor (which sets it off the
// request path, e.g. dataplane.HeapMonitor) and the request path, which
// only reads one atomic per request while it is off.
type Overload struct {
	active atomic.Bool
	shed   atomic.Uint64
}

// Set turns shedding on or off.
func (o *Overload) Set(on bool) { o.active.Store(on) }

// Active reports whether new requests are being shed.
func (o *Overload) Active() bool { return o.active.Load() }

// Shed counts the requests answered 503 because of overload.
func (o *Overload) Shed() uint64 { return o.shed.Load() }

var overloadedMut = state.HeaderMutation{ResponseAdd: []state.HeaderValueOption{
	{Key: HeaderOverloaded, Value: "true", Action: state.OverwriteIfExistsOrAdd},
}}

// shedOverload makes d a 503 local reply when the proxy is overloaded. It
// runs before routing so a shed request costs no route match, filter or
// upstream work.
func (p *Proxy) shedOverload(info *ConnInfo, d *decision) bool {
	o := p.opts.Overload
	if o == nil || !o.active.Load() {
		return false
	}
	o.shed.Add(1)
	*d = decision{info: info, early: true}
	d.setLocal(503, FlagOverload, BodyOverloaded)
	d.filterMut = &overloadedMut
	return true
}

// h1RequestLimitReached reports whether the HTTP/1.1 connection has served
// its common_http_protocol_options.max_requests_per_connection requests,
// so the current response closes it (Connection: close), as Envoy does.
func (s *h1Session) h1RequestLimitReached() bool {
	m := s.hcm.MaxRequestsPerConnection
	return m > 0 && s.served >= m
}
