//go:build !linux

package inpod

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
)

// errUnsupported: network namespaces are Linux-only.
var errUnsupported = errors.New("inpod: network namespaces need Linux")

func inNetns(*os.File, func() error) error { return errUnsupported }
func checkNetns(*os.File) error            { return errUnsupported }
func sameNetns(a, b *os.File) bool         { return false }
func listenIn(*os.File, string, bool) (*net.TCPListener, error) {
	return nil, errUnsupported
}
func dialIn(context.Context, *os.File, uint32, netip.Addr, string, string) (net.Conn, error) {
	return nil, errUnsupported
}

// returnPath: original-source delivery needs Linux.
type returnPath struct{}

func newReturnPath(string, uint32) *returnPath              { return nil }
func (*returnPath) install(context.Context, *os.File) error { return errUnsupported }
func (*returnPath) remove(context.Context, *os.File) error  { return errUnsupported }
