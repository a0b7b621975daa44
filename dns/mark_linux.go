package dns

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// markControl sets SO_MARK on an upstream socket so capture rules (which
// skip mark 0x539) never send the proxy's own queries back to it. Without
// CAP_NET_ADMIN the mark cannot be set; that is not an error, since the
// proxy's uid is excluded from capture too.
func markControl(mark int) func(network, address string, c syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, mark)
		})
	}
}
