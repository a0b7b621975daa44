package hbone

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/meshlet/meshlet/state"
)

// ClusterTunnel lets the upstream connection pools dial HBONE-tunneled
// clusters (dataplane/upstream.TunnelDialer): each host's ip:port becomes a
// CONNECT target at that host's HBONE port, with the cluster's expected
// identity in the pool key.
type ClusterTunnel struct {
	Client *Client
	// Src is this proxy's SPIFFE ID (the pool key's source identity).
	Src string
}

// DialTunnel implements dataplane/upstream.TunnelDialer.
func (t *ClusterTunnel) DialTunnel(ctx context.Context, cfg *state.HBONE, target string) (net.Conn, error) {
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
	return t.Client.Dial(ctx, Key{Src: t.Src, Dst: cfg.Identity, Addr: addr}, target, Meta{})
}
