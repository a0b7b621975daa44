package dataplane

import (
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshlet/meshlet/state"
)

// TestTransparentListeners: a listener whose spec says transparent, or that
// Options.Transparent selects (--capture-inbound tproxy), is bound with
// IP_TRANSPARENT, as TPROXY needs; others are ordinary sockets.
func TestTransparentListeners(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("IP_TRANSPARENT needs CAP_NET_ADMIN (root)")
		}
		t.Skip("IP_TRANSPARENT needs CAP_NET_ADMIN (root)")
	}
	e := newEnv(t, Options{Transparent: func(l *state.Listener) bool { return l.Name == "selected" }})
	plain := tcpListener("plain", tcpChain("c", "none"))
	bySpec := tcpListener("byspec", tcpChain("c", "none"))
	bySpec.Transparent = true
	selected := tcpListener("selected", tcpChain("c", "none"))
	for _, l := range []*state.Listener{plain, bySpec, selected} {
		e.listener(l)
	}
	want := map[string]int{"plain": 0, "byspec": 1, "selected": 1}
	deadline := time.Now().Add(5 * time.Second)
	for name := range want {
		for e.srv.Addr(name) == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	files, err := e.srv.ListenerFiles()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFiles(files)
	got := map[string]int{}
	for key, f := range files {
		// Not f.Fd(): that makes the shared file description blocking and
		// the listener's accept loop could no longer be closed.
		rc, err := f.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var v int
		var gerr error
		if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), unix.SOL_IP, unix.IP_TRANSPARENT) }); err != nil || gerr != nil {
			t.Fatalf("%s: %v %v", key, err, gerr)
		}
		for name := range want {
			if key == HandoffKey(name, loopback0()) {
				got[name] = v
			}
		}
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || g != w {
			t.Errorf("listener %q: IP_TRANSPARENT %d (bound %v), want %d; errors %v", name, g, ok, w, e.srv.Errors())
		}
	}
}
