package meshlet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

// ErrNoCluster is wrapped by Dial when no cluster serves the address.
var ErrNoCluster = errors.New("meshlet: no cluster for address")

// Dial opens a TCP connection to address ("service.ns.svc:port") through
// the cluster for that service: Istio's "outbound|PORT||HOST", else a
// cluster named "HOST:PORT", else one named "HOST". The cluster's load
// balancer picks the endpoint, its circuit breaker counts the connection,
// and its transport applies: TLS (with the workload identity for SDS
// contexts) or an HBONE tunnel. Connect failures feed outlier detection,
// as they do in the proxy. It starts the Server on first use.
func (s *Server) Dial(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("meshlet: dial %s %s: only tcp is supported", network, address)
	}
	rt, err := s.use(ctx)
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("meshlet: dial %s: %w", address, err)
	}
	var c *upstream.Cluster
	var name string
	for _, name = range []string{"outbound|" + port + "||" + host, address, host} {
		if c = rt.clusters.Cluster(name); c != nil {
			break
		}
	}
	if c == nil {
		return nil, fmt.Errorf("%w %s", ErrNoCluster, address)
	}
	if c.Spec().Type == state.ClusterOriginalDst {
		return nil, fmt.Errorf("meshlet: dial %s: cluster %q is ORIGINAL_DST: dial the address directly", address, name)
	}
	release, ok := c.Acquire(upstream.ResourceConnections)
	if !ok {
		return nil, fmt.Errorf("meshlet: dial %s: cluster %q: connection circuit breaker open", address, name)
	}
	h, err := c.Pick(&lb.PickInfo{})
	if err != nil || h == nil {
		release()
		return nil, fmt.Errorf("meshlet: dial %s: cluster %q: %w", address, name, errOr(err, lb.ErrNoHealthyUpstream))
	}
	h.Acquire()
	conn, err := c.Dial(ctx, h)
	if err != nil {
		c.ReportLocal(h, upstream.ConnectFailure)
		h.Release()
		release()
		return nil, fmt.Errorf("meshlet: dial %s: cluster %q endpoint %s: %w", address, name, h.Address, err)
	}
	c.ReportConnected(h)
	return &meshConn{Conn: conn, done: sync.OnceFunc(func() { h.Release(); release() })}, nil
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// meshConn returns the endpoint's active count and the breaker unit once
// closed.
type meshConn struct {
	net.Conn
	done func()
}

func (c *meshConn) Close() error {
	err := c.Conn.Close()
	c.done()
	return err
}

// CloseWrite half-closes the connection (close_notify then FIN for TLS),
// so protocols that end a request with EOF work over Dial.
func (c *meshConn) CloseWrite() error {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		return tc.CloseWrite()
	}
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.New("meshlet: connection cannot half-close")
}
