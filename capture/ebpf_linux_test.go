package capture

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	mebpf "github.com/meshlet/meshlet/ebpf"
	"github.com/meshlet/meshlet/internal/cgrouptest"
)

// TestEBPFInstallRemove: Install twice yields one set of programs, a second
// process's Install replaces what a crashed first one left pinned, and
// Remove (also twice) leaves no program and no pin.
func TestEBPFInstallRemove(t *testing.T) {
	cgrouptest.Require(t)
	cgrouptest.Feature(t, mebpf.Supported(), mebpf.ErrNotSupported)
	mnt := cgrouptest.Mount(t)
	cg := cgrouptest.NewCgroup(t, mnt.Cgroup, "inst")
	// The proxy's cgroup is one the test made too: nothing is attached to
	// the cgroup this test process runs in.
	proxyCg := cgrouptest.NewCgroup(t, mnt.Cgroup, "instproxy")
	cfg := Config{Inbound: InboundNone, DisableDNS: true, BPFPinDir: filepath.Join(mnt.BPFFS, "meshlet"), EBPFProxyCgroup: proxyCg}
	attached := func() int {
		t.Helper()
		n, err := mebpf.AttachedPrograms(cg)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	ctx := context.Background()
	crashed, err := New(BackendEBPF, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if crashed.Name() != BackendEBPF {
		t.Fatalf("backend %s, want ebpf", crashed.Name())
	}
	// The proxy's own cgroup is found through the test's mount.
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var rel string
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			rel = p
		}
	}
	if own, err := ownCgroup(cg); err != nil || own != filepath.Join(mnt.Cgroup, rel) {
		t.Errorf("ownCgroup = %q, %v; want %s under %s", own, err, rel, mnt.Cgroup)
	}
	if _, ok := crashed.(Accelerator); !ok {
		t.Error("the ebpf backend is not an Accelerator")
	}
	for range 2 {
		if err := crashed.Install(ctx, Cgroup(cg)); err != nil {
			t.Fatal(err)
		}
		if n := attached(); n != 6 {
			t.Fatalf("after Install: %d programs, want 6", n)
		}
	}
	// The first owner goes away without Remove; its pins stay.
	crashed.(*ebpfRedirector).objs.Close()
	if n := attached(); n != 6 {
		t.Fatalf("after a crash: %d programs, want the 6 pinned ones", n)
	}

	r, err := New(BackendEBPF, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Install(ctx, Cgroup(cg)); err != nil {
		t.Fatal(err)
	}
	if n := attached(); n != 6 {
		t.Fatalf("after the next Install: %d programs, want 6", n)
	}
	if n, err := mebpf.AttachedPrograms(proxyCg); err != nil || n != 1 {
		t.Fatalf("proxy cgroup: %d programs (%v), want get_sockopt only", n, err)
	}
	for range 2 {
		if err := r.Remove(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := attached(); n != 0 {
		t.Errorf("after Remove: %d programs attached", n)
	}
	if n, _ := mebpf.AttachedPrograms(proxyCg); n != 0 {
		t.Errorf("after Remove: %d programs on the proxy cgroup", n)
	}
	ents, err := os.ReadDir(cfg.BPFPinDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if len(left) > 0 {
		t.Errorf("pins left: %s", strings.Join(left, " "))
	}
	if err := r.Install(ctx, Host()); err == nil {
		t.Error("Install without a cgroup: no error")
	}
}
