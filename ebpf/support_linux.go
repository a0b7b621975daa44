package ebpf

import (
	"errors"
	"fmt"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"golang.org/x/sys/unix"
)

// Supported probes the kernel for every program type and helper the
// capture uses; a missing one wraps ErrNotSupported.
func Supported() error {
	for _, pt := range []cebpf.ProgramType{cebpf.CGroupSockAddr, cebpf.SockOps, cebpf.CGroupSockopt, cebpf.SkMsg} {
		if err := features.HaveProgramType(pt); err != nil {
			return notSupported(fmt.Sprintf("program type %v", pt), err)
		}
	}
	for _, h := range []struct {
		pt cebpf.ProgramType
		fn asm.BuiltinFunc
	}{
		{cebpf.CGroupSockAddr, asm.FnGetSocketCookie},
		{cebpf.SockOps, asm.FnGetNetnsCookie},
		{cebpf.CGroupSockopt, asm.FnGetNetnsCookie},
	} {
		if err := features.HaveProgramHelper(h.pt, h.fn); err != nil {
			return notSupported(fmt.Sprintf("helper %v in %v", h.fn, h.pt), err)
		}
	}
	for _, mt := range []cebpf.MapType{cebpf.LRUHash, cebpf.LPMTrie, cebpf.SockHash} {
		if err := features.HaveMapType(mt); err != nil {
			return notSupported(fmt.Sprintf("map type %v", mt), err)
		}
	}
	return nil
}

// notSupported wraps ErrNotSupported when the probe says the kernel lacks
// the feature; other probe errors (permissions) stay as they are.
func notSupported(what string, err error) error {
	if errors.Is(err, cebpf.ErrNotSupported) {
		return fmt.Errorf("ebpf: %s: %w (%w)", what, ErrNotSupported, err)
	}
	return fmt.Errorf("ebpf: probe %s: %w", what, err)
}

// checkCgroup2 makes sure dir is a cgroup v2 directory.
func checkCgroup2(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("ebpf: cgroup %s: %w", dir, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("ebpf: %s is not on a cgroup v2 filesystem: %w", dir, ErrNotSupported)
	}
	return nil
}

// checkBPFFS makes sure dir is on a bpf filesystem, where pins live.
func checkBPFFS(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("ebpf: bpffs %s: %w", dir, err)
	}
	if st.Type != unix.BPF_FS_MAGIC {
		return fmt.Errorf("ebpf: %s is not on a bpf filesystem (mount -t bpf bpf DIR): %w", dir, ErrNotSupported)
	}
	return nil
}
