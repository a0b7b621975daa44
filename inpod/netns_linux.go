package inpod

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/meshlet/meshlet/capture"
)

// inNetns runs fn on an OS thread inside the network namespace open as ns.
// Sockets fn creates stay in that namespace for their whole life, whatever
// thread later uses them. The thread is never handed back to the scheduler:
// it exits with its goroutine, so no other goroutine runs in the pod's
// namespace. When ns is the caller's own namespace fn runs directly (no
// privilege is needed to stay where one is).
func inNetns(ns *os.File, fn func() error) error {
	if same, err := isOwnNetns(ns); err != nil {
		return err
	} else if same {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Setns(int(ns.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", ns.Name(), err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// isOwnNetns reports whether ns is the namespace this process runs in.
func isOwnNetns(ns *os.File) (bool, error) {
	var theirs, ours unix.Stat_t
	if err := unix.Fstat(int(ns.Fd()), &theirs); err != nil {
		return false, fmt.Errorf("netns %s: %w", ns.Name(), err)
	}
	if err := unix.Stat("/proc/thread-self/ns/net", &ours); err != nil {
		if err := unix.Stat("/proc/self/ns/net", &ours); err != nil {
			return false, fmt.Errorf("own netns: %w", err)
		}
	}
	return theirs.Dev == ours.Dev && theirs.Ino == ours.Ino, nil
}

// checkNetns rejects a descriptor that is not a network namespace before
// anything is built on it.
func checkNetns(ns *os.File) error {
	t, err := unix.IoctlRetInt(int(ns.Fd()), unix.NS_GET_NSTYPE)
	if err != nil {
		return fmt.Errorf("not a namespace: %w", err)
	}
	if t != unix.CLONE_NEWNET {
		return fmt.Errorf("namespace type %#x is not a network namespace", t)
	}
	return nil
}

// sameNetns reports whether two descriptors name one namespace.
func sameNetns(a, b *os.File) bool {
	var sa, sb unix.Stat_t
	if unix.Fstat(int(a.Fd()), &sa) != nil || unix.Fstat(int(b.Fd()), &sb) != nil {
		return false
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// dialIn connects from inside ns with SO_MARK set (0 leaves it unset).
// A valid from binds the socket to that address with IP_TRANSPARENT (the
// address need not be local: original-source delivery).
func dialIn(ctx context.Context, ns *os.File, mark uint32, from netip.Addr, network, address string) (net.Conn, error) {
	d := net.Dialer{Control: func(network, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			if mark != 0 {
				if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark)); err != nil {
					serr = fmt.Errorf("SO_MARK %#x: %w", mark, err)
					return
				}
			}
			if from.IsValid() {
				lvl, opt := unix.SOL_IP, unix.IP_TRANSPARENT
				if network == "tcp6" {
					lvl, opt = unix.SOL_IPV6, unix.IPV6_TRANSPARENT
				}
				if err := unix.SetsockoptInt(int(fd), lvl, opt, 1); err != nil {
					serr = fmt.Errorf("transparent bind to %s: %w", from, err)
				}
			}
		}); err != nil {
			return err
		}
		return serr
	}}
	if from.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: from.AsSlice()}
	}
	var c net.Conn
	err := inNetns(ns, func() (err error) {
		c, err = d.DialContext(ctx, network, address)
		return err
	})
	return c, err
}

// listenIn opens a TCP listener inside ns; transparent sets IP_TRANSPARENT
// (TPROXY inbound).
func listenIn(ns *os.File, address string, transparent bool) (*net.TCPListener, error) {
	var ln net.Listener
	err := inNetns(ns, func() (err error) {
		if transparent {
			ln, err = capture.ListenTransparent(context.Background(), "tcp", address)
			return err
		}
		ln, err = net.Listen("tcp", address)
		return err
	})
	if err != nil {
		return nil, err
	}
	return ln.(*net.TCPListener), nil
}
