//go:build !linux

package memtrim

// TrimBinaryPages does nothing outside Linux.
func TrimBinaryPages() (int64, error) { return 0, nil }
