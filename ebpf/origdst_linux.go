package ebpf

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	cebpf "github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// OriginalDst returns where a connection the proxy accepted on its outbound
// port was headed, from the map the programs keep, without the getsockopt
// hook (for a proxy outside the attached cgroups). ok is false when the
// connection was not captured.
func (o *Objects) OriginalDst(c *net.TCPConn) (dst netip.AddrPort, ok bool, err error) {
	raddr, _ := c.RemoteAddr().(*net.TCPAddr)
	if raddr == nil {
		return netip.AddrPort{}, false, errors.New("ebpf: original dst: no peer address")
	}
	netns, err := sockopt(c, unix.SO_NETNS_COOKIE)
	if err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("ebpf: original dst: SO_NETNS_COOKIE: %w", err)
	}
	peer := raddr.AddrPort()
	k := capturePortKey{Netns: netns, Port: uint32(peer.Port()), Family: afInet6}
	if peer.Addr().Unmap().Is4() {
		k.Family = afInet
	}
	var v captureOrig
	if err := o.objs.OrigByPort.Lookup(k, &v); err != nil {
		if errors.Is(err, cebpf.ErrKeyNotExist) {
			return netip.AddrPort{}, false, nil
		}
		return netip.AddrPort{}, false, fmt.Errorf("ebpf: original dst: %w", err)
	}
	return origAddr(v), true, nil
}

// Accelerated reports whether c is in the fast-path sockhash: sends on it
// (and on its peer) bypass the TCP stack, and splice(2) never sees data
// redirected into it, so it must be copied with a read/write loop rather
// than io.Copy between two *net.TCPConn.
func (o *Objects) Accelerated(c *net.TCPConn) bool {
	if !o.fast {
		return false
	}
	la, _ := c.LocalAddr().(*net.TCPAddr)
	ra, _ := c.RemoteAddr().(*net.TCPAddr)
	if la == nil || ra == nil {
		return false
	}
	// The key's layout follows the socket's family, not its addresses: an
	// AF_INET6 socket may carry v4-mapped ones.
	af, err := sockopt(c, unix.SO_DOMAIN)
	if err != nil {
		return false
	}
	k := sockKey(int(af), la.AddrPort(), ra.AddrPort())
	var cookie uint64
	if err := o.objs.Fastpath.Lookup(k, &cookie); err != nil {
		return false
	}
	own, err := sockopt(c, unix.SO_COOKIE)
	return err == nil && own == cookie
}

// sockKey is the sockhash key of a socket of family af with these
// addresses.
func sockKey(af int, local, remote netip.AddrPort) captureSockKey {
	k := captureSockKey{Sport: uint32(local.Port()), Dport: uint32(remote.Port()), Family: uint32(af)}
	if af == afInet {
		a, b := local.Addr().Unmap().As4(), remote.Addr().Unmap().As4()
		k.Sip[0], k.Dip[0] = nativeU32(a[:]), nativeU32(b[:])
		return k
	}
	a, b := local.Addr().As16(), remote.Addr().As16()
	for i := range 4 {
		k.Sip[i] = nativeU32(a[i*4 : i*4+4])
		k.Dip[i] = nativeU32(b[i*4 : i*4+4])
	}
	return k
}

// sockopt reads an integer socket option of c (SOL_SOCKET).
func sockopt(c *net.TCPConn, opt int) (uint64, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		v    uint64
		gerr error
	)
	if err := rc.Control(func(fd uintptr) {
		if opt == unix.SO_DOMAIN {
			var d int
			d, gerr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, opt)
			v = uint64(d)
			return
		}
		v, gerr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, opt)
	}); err != nil {
		return 0, err
	}
	return v, gerr
}

// Stats are the programs' counters.
type Stats struct {
	Captured uint64 // connects sent to the proxy
	FastPath uint64 // messages handed over by the fast path
}

// Stats sums the per-CPU counters.
func (o *Objects) Stats() (Stats, error) {
	var st Stats
	for i, dst := range []*uint64{&st.Captured, &st.FastPath} {
		var per []uint64
		if err := o.objs.Stats.Lookup(uint32(i), &per); err != nil {
			return Stats{}, fmt.Errorf("ebpf: stats: %w", err)
		}
		for _, v := range per {
			*dst += v
		}
	}
	return st, nil
}
