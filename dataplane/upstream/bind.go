package upstream

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"

	"github.com/meshlet/meshlet/state"
)

// Every TCP connection to a cluster's hosts is opened by dialTCP, so that
// the cluster's upstream_bind_config and the Manager's socket mark apply to
// all of them: HTTP/1.1 and HTTP/2 pools, TLS origination, tcp_proxy,
// ORIGINAL_DST destinations and health checks alike. Istio binds its inbound
// clusters to 127.0.0.6 so that capture rules can tell the proxy's own
// delivery to the app from the app's traffic, and the app sees a loopback
// peer that is not 127.0.0.1.

// dialTCP opens a TCP connection to addr ("ip:port") from the cluster's
// bind address, if any. A bind failure is a connect failure, reported with
// the source address so that a missing 127.0.0.6 is recognisable.
func (c *Cluster) dialTCP(ctx context.Context, spec *state.Cluster, addr string) (net.Conn, error) {
	d := net.Dialer{Control: c.DialControl()}
	var src netip.AddrPort
	if b := spec.UpstreamBind; b != nil {
		dst, _ := netip.ParseAddrPort(addr)
		src = b.For(dst.Addr())
		if src.IsValid() {
			d.LocalAddr = net.TCPAddrFromAddrPort(src)
		}
		if b.Freebind {
			d.Control = withFreebind(d.Control)
		}
	}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if src.IsValid() {
			return nil, fmt.Errorf("connect %s from %s: %w", addr, src, err)
		}
		return nil, fmt.Errorf("connect %s: %w", addr, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	return conn, nil
}

// DialAddr opens a plain TCP connection to addr within the cluster's
// connect_timeout (and ctx), as every other dial of the cluster does: bound
// to upstream_bind_config's address and carrying the Manager's mark. It is
// for tcp_proxy to an ORIGINAL_DST cluster, where the destination is the
// downstream connection's, not a host of the cluster.
func (c *Cluster) DialAddr(ctx context.Context, addr netip.AddrPort) (net.Conn, error) {
	c.sawTraffic()
	spec := c.spec.Load()
	timeout := spec.ConnectTimeout
	if timeout <= 0 {
		timeout = state.DefaultConnectTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.dialTCP(ctx, spec, addr.String())
}

// withFreebind runs next (the mark) and then sets IP_FREEBIND, so that the
// bind succeeds for an address not (yet) assigned to an interface.
// Platforms without the option dial as if freebind were off, which only
// matters when the address is missing.
func withFreebind(next func(network, address string, rc syscall.RawConn) error) func(network, address string, rc syscall.RawConn) error {
	return func(network, address string, rc syscall.RawConn) error {
		if next != nil {
			if err := next(network, address, rc); err != nil {
				return err
			}
		}
		var serr error
		if err := rc.Control(func(fd uintptr) { serr = setFreebind(fd, network == "tcp6") }); err != nil {
			return err
		}
		return serr
	}
}
