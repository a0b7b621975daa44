package dataplane

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// kernelIdle reads how long ago the socket last received data
// (tcpi_last_data_recv). Asking the kernel once per check keeps the copy
// loop free of bookkeeping, so io.Copy can splice without seeing the bytes.
type kernelIdle struct{ rc syscall.RawConn }

func newKernelIdle(c *net.TCPConn) (*kernelIdle, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, false
	}
	k := &kernelIdle{rc: rc}
	if _, ok := k.idleFor(); !ok {
		return nil, false
	}
	return k, true
}

func (k *kernelIdle) idleFor() (time.Duration, bool) {
	var (
		info *unix.TCPInfo
		err  error
	)
	if cerr := k.rc.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	}); cerr != nil || err != nil {
		return 0, false
	}
	return time.Duration(info.Last_data_recv) * time.Millisecond, true
}
