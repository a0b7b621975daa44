package upstream

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// setFreebind sets IP_FREEBIND (IPV6_FREEBIND on IPv6 sockets; Linux 4.15+),
// as Envoy does for BindConfig.freebind.
func setFreebind(fd uintptr, v6 bool) error {
	level, opt, name := unix.IPPROTO_IP, unix.IP_FREEBIND, "IP_FREEBIND"
	if v6 {
		level, opt, name = unix.IPPROTO_IPV6, unix.IPV6_FREEBIND, "IPV6_FREEBIND"
	}
	if err := unix.SetsockoptInt(int(fd), level, opt, 1); err != nil {
		return fmt.Errorf("setsockopt %s: %w", name, err)
	}
	return nil
}
