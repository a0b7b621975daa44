//go:build !linux

package dataplane

import (
	"net"
	"net/netip"
)

// originalDst: only Linux conntrack knows NAT-redirected destinations; other
// systems see connections at their local address.
func originalDst(_ *net.TCPConn, local netip.AddrPort) (netip.AddrPort, error) {
	return local, nil
}
