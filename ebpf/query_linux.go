package ebpf

import (
	"fmt"
	"os"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// hookTypes are the cgroup attach points the capture uses.
var hookTypes = []cebpf.AttachType{
	cebpf.AttachCGroupInet4Connect, cebpf.AttachCGroupInet6Connect, cebpf.AttachCGroupSockOps,
	cebpf.AttachCGroupGetsockopt, cebpf.AttachCgroupInet4GetPeername, cebpf.AttachCgroupInet6GetPeername,
}

// AttachedPrograms counts the programs attached directly to the cgroup dir
// at the capture's hooks (whoever attached them), e.g. to check that
// nothing is left after removal.
func AttachedPrograms(dir string) (int, error) {
	f, err := os.Open(dir)
	if err != nil {
		return 0, fmt.Errorf("ebpf: cgroup %s: %w", dir, err)
	}
	defer f.Close()
	n := 0
	for _, at := range hookTypes {
		r, err := link.QueryPrograms(link.QueryOptions{Target: int(f.Fd()), Attach: at})
		if err != nil {
			return 0, fmt.Errorf("ebpf: query %v on %s: %w", at, dir, err)
		}
		n += len(r.Programs)
	}
	return n, nil
}
