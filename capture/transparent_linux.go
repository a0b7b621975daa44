package capture

import (
	"context"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// ListenTransparent listens with IP_TRANSPARENT (IPV6_TRANSPARENT for IPv6)
// set, as TPROXY needs: the kernel hands the listener connections addressed
// to any destination, and each accepted connection's local address is the
// original destination.
func ListenTransparent(ctx context.Context, network, address string) (net.Listener, error) {
	lc := net.ListenConfig{Control: func(network, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			if network == "tcp6" {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_IPV6, unix.IPV6_TRANSPARENT, 1)
				// A dual-stack socket also takes v4 traffic; the v4 flag is
				// best effort there.
				_ = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
				return
			}
			serr = unix.SetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT, 1)
		})
		if err != nil {
			return err
		}
		return serr
	}}
	return lc.Listen(ctx, network, address)
}
