package capture

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// soOriginalDst is SO_ORIGINAL_DST (SOL_IP) and IP6T_SO_ORIGINAL_DST
// (SOL_IPV6); both are 80.
const soOriginalDst = 80

// NATOriginalDst returns the destination a NAT REDIRECT rewrote, from
// conntrack via getsockopt, or ErrNotRedirected.
func NATOriginalDst(c syscall.Conn, v6 bool) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	var (
		out  netip.AddrPort
		gerr error
	)
	cerr := rc.Control(func(fd uintptr) {
		if !v6 {
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
		return netip.AddrPort{}, cerr
	}
	if errors.Is(gerr, unix.ENOENT) {
		return netip.AddrPort{}, ErrNotRedirected
	}
	if gerr != nil {
		return netip.AddrPort{}, fmt.Errorf("capture: getsockopt SO_ORIGINAL_DST: %w", gerr)
	}
	return out, nil
}

// OriginalDst returns where a captured TCP connection was headed: the
// pre-NAT destination of a REDIRECTed connection, else its local address
// (TPROXY keeps the original destination as the local address; a direct
// connection is its own destination).
func OriginalDst(c net.Conn) (netip.AddrPort, error) {
	la, ok := c.LocalAddr().(*net.TCPAddr)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("capture: original dst of a %T", c.LocalAddr())
	}
	// A dual-stack listener sees IPv4 peers as v4-mapped; report them as
	// IPv4, as a dialer would write them.
	local := netip.AddrPortFrom(la.AddrPort().Addr().Unmap(), la.AddrPort().Port())
	sc, ok := c.(syscall.Conn)
	if !ok {
		return local, nil
	}
	od, err := NATOriginalDst(sc, !local.Addr().Unmap().Is4())
	if errors.Is(err, ErrNotRedirected) {
		return local, nil
	}
	if err != nil {
		return local, err
	}
	return od, nil
}
