package integration

import (
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// netnsProxy is the real binary run by a namespaced test (usually through
// `ip netns exec`): started, killed at cleanup unless the test stopped it,
// its output logged when the test failed.
type netnsProxy struct {
	cmd     *exec.Cmd
	out     *lockedBuf
	done    chan error
	stopped bool
}

// startNetnsProxy starts cmd (with start when set, e.g. to place it in a
// cgroup; else cmd.Start) and waits up to 15 s for ready in its output.
func startNetnsProxy(t *testing.T, cmd *exec.Cmd, start func(*exec.Cmd) error, ready string) *netnsProxy {
	t.Helper()
	p := &netnsProxy{cmd: cmd, out: &lockedBuf{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if start == nil {
		start = (*exec.Cmd).Start
	}
	if err := start(cmd); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if !p.stopped {
			_ = cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("ztunnel output:\n%s", p.out.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(p.out.String(), ready) {
		if time.Now().After(deadline) {
			t.Fatalf("%q not logged after 15s", ready)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// stop sends SIGTERM and fails the test unless the process exits within
// 10 s (it removes what it installed on the way out).
func (p *netnsProxy) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		p.stopped = true
	case <-time.After(10 * time.Second):
		t.Fatal("ztunnel did not exit on SIGTERM")
	}
}
