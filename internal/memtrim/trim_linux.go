package memtrim

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// TrimBinaryPages unmaps the resident pages of the executable's read-only
// mappings (code and read-only data) so that only the pages used from now
// on come back. Writable mappings are never touched: dropping a private
// written page would lose its contents. It returns the bytes advised.
func TrimBinaryPages() (int64, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return 0, fmt.Errorf("memtrim: %w", err)
	}
	f, err := os.Open("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("memtrim: %w", err)
	}
	defer f.Close()
	var total int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 00400000-00c00000 r-xp 00000000 fd:00 123 /path/to/exe
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[5] != exe {
			continue
		}
		perms := fields[1]
		if len(perms) < 4 || perms[1] != '-' || perms[3] != 'p' {
			continue // writable or shared: leave it alone
		}
		lo, hi, ok := strings.Cut(fields[0], "-")
		if !ok {
			continue
		}
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		if err1 != nil || err2 != nil || end <= start {
			continue
		}
		if err := madvise(uintptr(start), uintptr(end-start)); err != nil {
			return total, fmt.Errorf("memtrim: madvise %s: %w", fields[0], err)
		}
		total += int64(end - start)
	}
	return total, sc.Err()
}

func madvise(addr, length uintptr) error {
	_, _, errno := unix.Syscall(unix.SYS_MADVISE, addr, length, unix.MADV_DONTNEED)
	if errno != 0 {
		return errno
	}
	return nil
}
