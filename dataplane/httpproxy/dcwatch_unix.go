//go:build unix

package httpproxy

import (
	"errors"
	"net"
	"syscall"
)

// rawConnOf finds the socket under conn (through TLS).
func rawConnOf(conn net.Conn) (syscall.RawConn, bool) {
	for range 4 {
		switch c := conn.(type) {
		case syscall.Conn:
			rc, err := c.SyscallConn()
			return rc, err == nil
		case interface{ NetConn() net.Conn }:
			conn = c.NetConn()
		default:
			return nil, false
		}
	}
	return nil, false
}

// watchClosed starts w's goroutine on conn's socket.
func watchClosed(conn net.Conn, w *dcWatch, poke func(gone bool)) bool {
	rc, ok := rawConnOf(conn)
	if !ok {
		return false
	}
	go func() {
		defer close(w.done)
		var buf [1]byte
		// Read parks on the netpoller while the callback says "not ready",
		// and returns early when stop sets a past deadline.
		_ = rc.Read(func(fd uintptr) bool {
			n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			switch {
			case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR):
				return false
			case n > 0:
				w.data.Store(true)
			default:
				// A zero-byte read is the client's FIN; an error its RST.
				// Envoy does not half-close HTTP/1.1 downstreams: a FIN
				// ends the connection and its request.
				w.gone.Store(true)
			}
			return true
		})
		if w.ended() {
			poke(w.gone.Load())
		}
	}()
	return true
}
