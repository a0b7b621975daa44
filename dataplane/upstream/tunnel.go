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
		if m := c.internal.Load(); m != nil {
			if name, ok := (*m)[addr]; ok {
				// An EDS update can arrive before the cluster that says
				// how to tunnel: a direct dial would send the traffic
				// around the tunnel, so it fails as a connect failure.
				return nil, fmt.Errorf("connect %s: endpoint is envoy_internal_address %q but cluster has no internal_upstream tunnel config", addr, name)
			}
		}
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

// internalEndpoints indexes the envoy_internal_address endpoints of spec's
// static assignment and cla by their tunneled address; nil when none.
func internalEndpoints(spec *state.Cluster, cla *state.ClusterLoadAssignment) *map[string]string {
	var out map[string]string
	for _, a := range []*state.ClusterLoadAssignment{spec.LoadAssignment, cla} {
		if a == nil {
			continue
		}
		for _, loc := range a.Localities {
			for _, ep := range loc.Endpoints {
				if ep.Internal == nil || ep.Address == "" {
					continue
				}
				if out == nil {
					out = map[string]string{}
				}
				out[ep.Address] = ep.Internal.Listener
			}
		}
	}
	if out == nil {
		return nil
	}
	return &out
}
