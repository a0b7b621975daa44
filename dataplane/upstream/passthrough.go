package upstream

import (
	"context"
	"net"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

// DialPassthrough opens the byte stream to h within the cluster's
// connect_timeout (and ctx) without originating the cluster's TLS: TCP, or
// an HBONE stream when the cluster is tunneled. It is for connections whose
// client already speaks TLS end to end (the SNI gateway's passthrough),
// like Istio's sni-dnat clusters, which are copies of the service clusters
// with the transport socket removed.
func (c *Cluster) DialPassthrough(ctx context.Context, h *lb.Host) (net.Conn, error) {
	c.sawTraffic()
	spec := c.spec.Load()
	timeout := spec.ConnectTimeout
	if timeout <= 0 {
		timeout = state.DefaultConnectTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := c.dialTransport(ctx, spec, h.Address)
	if err != nil {
		return nil, err
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return conn, nil
}
