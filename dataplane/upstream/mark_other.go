//go:build !linux

package upstream

import (
	"errors"
	"fmt"
)

// setMark: packet marks are a Linux netfilter concept; elsewhere marking
// fails once (logged) and sockets stay unmarked.
func setMark(_ uintptr, mark uint32) error {
	return fmt.Errorf("SO_MARK %#x: %w", mark, errors.ErrUnsupported)
}
