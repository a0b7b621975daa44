package integration

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/meshlet/meshlet/capture"
	mebpf "github.com/meshlet/meshlet/ebpf"
	"github.com/meshlet/meshlet/internal/cgrouptest"
)

// peerClient is an unmodified TCP client: it dials its argument and prints
// the peer address the kernel reports (getpeername) and the first line it
// reads.
const peerClient = `package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"time"
)

func main() {
	c, err := net.DialTimeout("tcp", os.Args[1], 2*time.Second)
	if err != nil {
		fmt.Println("dial error:", err)
		os.Exit(1)
	}
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Println("read error:", err)
		os.Exit(1)
	}
	fmt.Printf("%s %s", c.RemoteAddr(), line)
}
`

// buildPeerClient compiles peerClient where uid 1000 can run it.
func buildPeerClient(t *testing.T) string {
	t.Helper()
	// Not t.TempDir: its parent is closed to other users.
	dir, err := os.MkdirTemp("", "meshlet-client")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "client.go")
	if err := os.WriteFile(src, []byte(peerClient), 0o644); err != nil {
		t.Fatal(err)
	}
	exe := filepath.Join(dir, "client")
	if out, err := exec.Command("go", "build", "-o", exe, src).CombinedOutput(); err != nil {
		t.Fatalf("build client: %v: %s", err, out)
	}
	return exe
}

// TestCaptureEBPF runs the real binary with --capture ebpf in a pod
// namespace. An unmodified client (uid 1000) in the captured cgroup dials
// 10.99.0.1:80 and is served by the backend the per-destination listener
// for that original destination routes to, and sees 10.99.0.1:80 as its
// peer; a destination without a listener passes through to where it was
// headed without looping (the proxy, in a child of the captured cgroup,
// is excluded by uid); after SIGTERM no program, link or pin remains and
// connects go direct again.
func TestCaptureEBPF(t *testing.T) {
	t.Parallel()
	requireCapturePriv(t)
	cgrouptest.Feature(t, mebpf.Supported(), mebpf.ErrNotSupported)
	mnt := cgrouptest.Mount(t)
	pod := cgrouptest.NewCgroup(t, mnt.Cgroup, "pod")
	appCg := cgrouptest.NewCgroup(t, pod, "app")
	proxyCg := cgrouptest.NewCgroup(t, pod, "proxy")
	pins := filepath.Join(mnt.BPFFS, "meshlet")
	client := buildPeerClient(t)

	b := make([]byte, 5)
	_, _ = rand.Read(b)
	ns := "mebp" + hex.EncodeToString(b)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	run(t, "ip", "-n", ns, "addr", "add", "10.99.0.1/32", "dev", "lo")
	scope := capture.NetNSPath(filepath.Join("/var/run/netns", ns))

	serve := func(addr, answer string) {
		var ln net.Listener
		if err := scope.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
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
				_, _ = io.WriteString(c, answer+"\n")
				c.Close()
			}
		}()
	}
	serve("127.0.0.1:9090", "backend")
	serve("10.99.0.1:81", "direct81")

	boot := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(boot, []byte(captureBootstrap), 0o600); err != nil {
		t.Fatal(err)
	}
	// The proxy runs as root in the pod's proxy cgroup, so root's traffic
	// is the proxy's own (--capture-uid 0).
	px := startNetnsProxy(t, exec.Command("ip", "netns", "exec", ns, binPath, "run", "--bootstrap", boot,
		"--capture", "ebpf", "--capture-cgroup", pod, "--capture-bpffs", pins,
		"--capture-uid", "0", "--capture-gid", "0", "--metrics", "", "--drain-time", "1s"), func(c *exec.Cmd) error {
		release := cgrouptest.InCgroup(t, c, proxyCg)
		defer release()
		return c.Start()
	}, "capture installed")
	if !strings.Contains(px.out.String(), "backend=ebpf") {
		t.Fatalf("capture did not use ebpf:\n%s", px.out.String())
	}

	dial := func(addr string) string {
		var o []byte
		_ = scope.Do(func() error {
			c := exec.Command(client, addr)
			c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
			release := cgrouptest.InCgroup(t, c, appCg)
			var err error
			o, err = c.CombinedOutput()
			release()
			if err != nil {
				o = fmt.Appendf(o, " (%v)", err)
			}
			return nil
		})
		return strings.TrimSpace(string(o))
	}
	for _, tc := range []struct{ addr, want string }{
		// Captured: the proxy learns 10.99.0.1:80 through getsockopt and
		// hands it to that destination's listener; the client's peer is
		// still 10.99.0.1:80.
		{"10.99.0.1:80", "10.99.0.1:80 backend"},
		// Captured, passed through to the original destination by the
		// proxy, whose own connect is not captured again.
		{"10.99.0.1:81", "10.99.0.1:81 direct81"},
		// Loopback is never captured.
		{"127.0.0.1:9090", "127.0.0.1:9090 backend"},
	} {
		if got := dial(tc.addr); got != tc.want {
			t.Errorf("dial %s: %q, want %q", tc.addr, got, tc.want)
		}
	}
	if n, err := mebpf.AttachedPrograms(pod); err != nil || n != 6 {
		t.Errorf("while running: %d programs attached to the pod cgroup (%v), want 6", n, err)
	}

	px.stop(t)
	if n, err := mebpf.AttachedPrograms(pod); err != nil || n != 0 {
		t.Errorf("after exit: %d programs attached (%v), want 0", n, err)
	}
	if ents, _ := os.ReadDir(pins); len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("pins left after exit: %v", names)
	}
	// Nothing redirects any more: 10.99.0.1:80 has no listener.
	if got := dial("10.99.0.1:80"); !strings.Contains(got, "connection refused") {
		t.Errorf("dial 10.99.0.1:80 after exit: %q, want connection refused", got)
	}
}
