package capture

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	mebpf "github.com/meshlet/meshlet/ebpf"
	"github.com/meshlet/meshlet/internal/cgrouptest"
)

// TestEBPFStats: the eBPF backend reports its programs' counters through
// StatsReporter: nothing before Install, the outbound programs loaded (and
// no inbound one) after it, a connect from the cgroup counted once it was
// sent to the proxy's port, nothing again after Remove.
func TestEBPFStats(t *testing.T) {
	cgrouptest.Require(t)
	cgrouptest.Feature(t, mebpf.Supported(), mebpf.ErrNotSupported)
	mnt := cgrouptest.Mount(t)
	cg := cgrouptest.NewCgroup(t, mnt.Cgroup, "stats")
	proxyCg := cgrouptest.NewCgroup(t, mnt.Cgroup, "statsproxy")

	// The "proxy": answers every connection on loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintln(c, "proxy")
			c.Close()
		}
	}()

	cfg := Config{
		OutboundPort: uint16(ln.Addr().(*net.TCPAddr).Port), Inbound: InboundNone, DisableDNS: true,
		BPFPinDir: filepath.Join(mnt.BPFFS, "meshlet"), EBPFProxyCgroup: proxyCg,
	}
	r, err := New(BackendEBPF, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sr, ok := r.(StatsReporter)
	if !ok {
		t.Fatal("the ebpf backend is not a StatsReporter")
	}
	stats := func() Stats {
		t.Helper()
		st, err := sr.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if st := stats(); st != (Stats{}) {
		t.Errorf("before Install: %+v, want nothing", st)
	}
	ctx := context.Background()
	if err := r.Install(ctx, Cgroup(cg)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Remove(ctx) })
	if st := stats(); st != (Stats{Outbound: true}) {
		t.Errorf("after Install: %+v, want outbound loaded, all zero", st)
	}

	// A client in the cgroup connects to a documentation address; the
	// program sends it to the listener above.
	cmd := exec.Command(clientBinary(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=192.0.2.1:80")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	release := cgrouptest.InCgroup(t, cmd, cg)
	err = cmd.Start()
	release()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil || strings.TrimSpace(out.String()) != "proxy" {
		t.Fatalf("client in the cgroup: %q, %v; want the proxy's answer", out.String(), err)
	}
	if st := stats(); st != (Stats{Outbound: true, Captured: 1}) {
		t.Errorf("after one connect: %+v, want Captured 1", st)
	}

	if err := r.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if st := stats(); st != (Stats{}) {
		t.Errorf("after Remove: %+v, want nothing", st)
	}
}
