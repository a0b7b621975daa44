//go:build !linux

package dns

import "syscall"

// markControl: socket marks exist only on Linux.
func markControl(int) func(network, address string, c syscall.RawConn) error { return nil }
