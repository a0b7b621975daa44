package upstream

import (
	"context"
	"net/netip"
)

// Downstream is what a tunnel dialer may carry about the connection being
// proxied: HBONE writes Source as "forwarded: for=" and propagates
// TraceParent (see hbone.Meta). The data plane attaches it to the dial
// context of each tcp_proxy connection; pooled HTTP connections serve
// many downstreams and carry none.
type Downstream struct {
	// Source is the downstream client's address.
	Source netip.Addr
	// TraceParent is the downstream's W3C traceparent, "" when it had none.
	TraceParent string
}

type downstreamKey struct{}

// WithDownstream returns ctx carrying d for the TunnelDialer.
func WithDownstream(ctx context.Context, d Downstream) context.Context {
	return context.WithValue(ctx, downstreamKey{}, d)
}

// DownstreamFrom returns what WithDownstream attached, if anything.
func DownstreamFrom(ctx context.Context) (Downstream, bool) {
	d, ok := ctx.Value(downstreamKey{}).(Downstream)
	return d, ok
}
