package upstream

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// setMark sets SO_MARK, which needs CAP_NET_ADMIN (EPERM otherwise).
func setMark(fd uintptr, mark uint32) error {
	if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
		return fmt.Errorf("setsockopt SO_MARK %#x: %w", mark, err)
	}
	return nil
}
