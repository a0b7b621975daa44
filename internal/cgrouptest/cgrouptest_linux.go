package cgrouptest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Require skips the test (fails it under CI=true) unless it runs as root.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		fail(t, "needs root for cgroup and bpf mounts")
	}
}

// Feature ends the test when a kernel-feature probe failed (err not
// nil): a skip outside CI when err wraps notSupported, else (under
// CI=true, or any other error) a failure, as privileged tests must.
func Feature(t testing.TB, err, notSupported error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" || !errors.Is(err, notSupported) {
		t.Fatal(err)
	}
	t.Skip(err)
}

func fail(t testing.TB, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

// Mounts are a test's cgroup v2 and bpffs mounts.
type Mounts struct {
	Cgroup string // root of the cgroup v2 hierarchy
	BPFFS  string
}

// Mount mounts cgroup2 and bpf under a new temporary directory and
// unmounts them at cleanup. A kernel without either skips the test (fails
// it under CI=true).
func Mount(t testing.TB) Mounts {
	t.Helper()
	Require(t)
	dir, err := os.MkdirTemp("", "meshlet-cg")
	if err != nil {
		t.Fatal(err)
	}
	m := Mounts{Cgroup: filepath.Join(dir, "cgroup"), BPFFS: filepath.Join(dir, "bpf")}
	for _, p := range []struct{ dir, fs string }{{m.Cgroup, "cgroup2"}, {m.BPFFS, "bpf"}} {
		if err := os.Mkdir(p.dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount(p.fs, p.dir, p.fs, 0, ""); err != nil {
			_ = os.RemoveAll(dir)
			fail(t, "mount %s: %v", p.fs, err)
		}
	}
	t.Cleanup(func() {
		for _, d := range []string{m.BPFFS, m.Cgroup} {
			// Lazy: a cgroup directory still being emptied by the kernel
			// must not make the unmount fail.
			if err := unix.Unmount(d, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", d, err)
			}
		}
		_ = os.RemoveAll(dir)
	})
	return m
}

// NewCgroup makes a uniquely named child of parent; it is removed at
// cleanup, after waiting for its processes to go.
func NewCgroup(t testing.TB, parent, prefix string) string {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	dir := filepath.Join(parent, prefix+hex.EncodeToString(b))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := os.Remove(dir)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("remove cgroup %s: %v", dir, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
	return dir
}

// Empty reports whether no process is left in the cgroup dir.
func Empty(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	return err == nil && strings.TrimSpace(string(b)) == ""
}

// InCgroup makes cmd start inside the cgroup dir (clone3 with
// CLONE_INTO_CGROUP); the returned func closes the directory fd and must be
// called after cmd.Start.
func InCgroup(t testing.TB, cmd *exec.Cmd, dir string) func() {
	t.Helper()
	f, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(f.Fd())
	return func() { f.Close() }
}
