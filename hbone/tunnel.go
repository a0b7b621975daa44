package hbone

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/state"
)

func (t *ClusterTunnel) meta(ctx context.Context) Meta {
	if t.Meta == nil {
		return Meta{}
	}
	return t.Meta(ctx)
}

// ClusterTunnel lets the upstream connection pools dial HBONE-tunneled
// clusters (dataplane/upstream.TunnelDialer): each host's ip:port becomes a
// CONNECT target at that host's HBONE port, with the cluster's expected
// identity in the pool key.
type ClusterTunnel struct {
	Client *Client
	// Src is this proxy's SPIFFE ID (the pool key's source identity).
	Src string
	// Store is the configuration the Istio shape (state.HBONE.Internal) is
	// resolved against on every dial: endpoint, internal listener, tunnel
	// cluster and its SDS secrets. Local serves the SDS names a local agent
	// would (Istio's "default" and "ROOTCA"); nil falls back to Client's
	// Source.
	Store *state.Store
	Local identity.Source
	// Meta, when set, gives the metadata headers of a tunneled connection
	// (forwarded, baggage, traceparent) from the dial context.
	Meta func(ctx context.Context) Meta
}

// DialTunnel implements dataplane/upstream.TunnelDialer.
func (t *ClusterTunnel) DialTunnel(ctx context.Context, cfg *state.HBONE, target string) (net.Conn, error) {
	if cfg.Internal {
		return t.dialInternal(ctx, cfg, target)
	}
	addr := cfg.Address
	if addr == "" {
		host, _, err := net.SplitHostPort(target)
		if err != nil {
			return nil, fmt.Errorf("hbone target %q: %w", target, err)
		}
		port := cfg.Port
		if port == 0 {
			port = DefaultPort
		}
		addr = net.JoinHostPort(host, strconv.Itoa(int(port)))
	}
	return t.Client.Dial(ctx, Key{Src: t.Src, Dst: cfg.Identity, Addr: addr}, target, t.meta(ctx))
}
