//go:build !linux

package capture

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"syscall"
)

// Redirection is netfilter's; elsewhere only the "none" backend works and
// connections are their own original destination.

var errUnsupported = errors.New("capture: traffic redirection needs Linux")

func (s Scope) Do(fn func() error) error {
	if s.IsHost() {
		return fn()
	}
	return errUnsupported
}

func newIPTables(string, Config) (Redirector, error) { return nil, errUnsupported }
func newNFTables(Config) (Redirector, error)         { return nil, errUnsupported }
func newEBPF(Config) (Redirector, error)             { return nil, errUnsupported }

func NATOriginalDst(syscall.Conn, bool) (netip.AddrPort, error) {
	return netip.AddrPort{}, ErrNotRedirected
}

func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	la, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, errUnsupported
	}
	return netip.AddrPortFrom(la.AddrPort().Addr().Unmap(), la.AddrPort().Port()), nil
}

func ListenTransparent(context.Context, string, string) (net.Listener, error) {
	return nil, errUnsupported
}
