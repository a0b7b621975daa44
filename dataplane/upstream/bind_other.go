//go:build !linux

package upstream

// setFreebind: IP_FREEBIND is Linux-only; elsewhere freebind is a no-op and
// binding an unassigned address fails the dial as it would without it.
func setFreebind(uintptr, bool) error { return nil }
