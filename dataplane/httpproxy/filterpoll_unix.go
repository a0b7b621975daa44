//go:build unix

package httpproxy

import (
	"net"
	"syscall"
)

// canPollClosed reports whether peerClosed can look at conn's socket.
func canPollClosed(conn net.Conn) bool {
	_, ok := conn.(syscall.Conn)
	return ok
}

// peerClosed peeks at conn's socket without consuming anything: a zero-byte
// read means the client sent FIN. Pending bytes (a pipelined request, TLS
// records) count as open.
func peerClosed(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	closed := false
	var buf [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = n == 0 && err == nil
		return true
	})
	return closed
}
