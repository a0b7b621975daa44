//go:build !linux

package dataplane

import (
	"net"
	"time"
)

// kernelIdle is Linux only; elsewhere reads are counted instead.
type kernelIdle struct{}

func newKernelIdle(*net.TCPConn) (*kernelIdle, bool) { return nil, false }

func (*kernelIdle) idleFor() (time.Duration, bool) { return 0, false }
