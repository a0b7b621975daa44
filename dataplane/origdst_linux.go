package dataplane

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (SOL_IP) and IP6T_SO_ORIGINAL_DST
// (SOL_IPV6); both are 80.
const soOriginalDst = 80

// originalDst returns the destination a NAT REDIRECT rewrote, from
// conntrack via getsockopt. Connections that were not redirected (ENOENT)
// report their local address, as with TPROXY or a direct connection.
func originalDst(c *net.TCPConn, local netip.AddrPort) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return local, err
	}
	var (
		out  netip.AddrPort
		gerr error
	)
	cerr := rc.Control(func(fd uintptr) {
		if local.Addr().Unmap().Is4() {
			// The kernel writes a sockaddr_in into the 16 bytes of an
			// ip_mreq-sized buffer.
			var mreq *unix.IPv6Mreq
			mreq, gerr = unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, soOriginalDst)
			if gerr != nil {
				return
			}
			b := mreq.Multiaddr
			port := binary.BigEndian.Uint16(b[2:4])
			out = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port)
			return
		}
		// sockaddr_in6 fits in the buffer of an ip6_mtuinfo.
		var info *unix.IPv6MTUInfo
		info, gerr = unix.GetsockoptIPv6MTUInfo(int(fd), unix.SOL_IPV6, soOriginalDst)
		if gerr != nil {
			return
		}
		sa := info.Addr
		// sin6_port is in network byte order in memory.
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		out = netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port)
	})
	if cerr != nil {
		return local, cerr
	}
	if gerr != nil {
		if errors.Is(gerr, unix.ENOENT) {
			return local, nil
		}
		return local, gerr
	}
	return out, nil
}
