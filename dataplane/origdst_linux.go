package dataplane

import (
	"errors"
	"net"
	"net/netip"

	"github.com/meshlet/meshlet/capture"
)

// originalDst returns the destination a NAT REDIRECT rewrote (the
// getsockopt lives in capture, which installs the redirects). Connections
// that were not redirected report their local address, as with TPROXY or a
// direct connection.
func originalDst(c *net.TCPConn, local netip.AddrPort) (netip.AddrPort, error) {
	od, err := capture.NATOriginalDst(c, !local.Addr().Unmap().Is4())
	if errors.Is(err, capture.ErrNotRedirected) {
		return local, nil
	}
	if err != nil {
		return local, err
	}
	return od, nil
}
