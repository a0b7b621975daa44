package upstream

import (
	"context"
	"fmt"
	"net"

	"github.com/meshlet/meshlet/state"
)

// TunnelDialer opens a connection to target (a host's ip:port) through a
// tunnel described by cfg. hbone.ClusterTunnel implements it; upstream
// does not import hbone so that the tunnel stays an optional part.
type TunnelDialer interface {
	DialTunnel(ctx context.Context, cfg *state.HBONE, target string) (net.Conn, error)
}

// SetTunnel installs the dialer for clusters with state.Cluster.HBONE set;
// without one, dialing such a cluster fails rather than silently sending
// plaintext around the tunnel.
func (m *Manager) SetTunnel(d TunnelDialer) {
	if d == nil {
		m.tunnel.Store(nil)
		return
	}
	m.tunnel.Store(&d)
}

// dialTransport opens the byte stream under any TLS: TCP, or an HBONE
// stream when the cluster is tunneled.
func (c *Cluster) dialTransport(ctx context.Context, spec *state.Cluster, addr string) (net.Conn, error) {
	if spec.HBONE == nil {
		return c.dialTCP(ctx, spec, addr) // bind.go
	}
	var td *TunnelDialer
	if c.tunnel != nil {
		td = c.tunnel.Load()
	}
	if td == nil {
		return nil, fmt.Errorf("connect %s: cluster is HBONE-tunneled but no tunnel dialer is configured", addr)
	}
	conn, err := (*td).DialTunnel(ctx, spec.HBONE, addr)
	if err != nil {
		return nil, fmt.Errorf("connect %s over hbone: %w", addr, err)
	}
	return conn, nil
}
