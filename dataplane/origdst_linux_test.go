package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/meshlet/meshlet/state"
)

// inNetns runs fn on a thread moved into a fresh network namespace with lo
// up. Sockets fn creates (and commands it runs) live in that namespace; the
// thread is discarded afterwards.
func inNetns(t *testing.T, fn func() error) error {
	t.Helper()
	if os.Getuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs root for a network namespace")
		}
		t.Skip("needs root for a network namespace")
	}
	if _, err := exec.LookPath("ip6tables"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs iptables and ip6tables")
		}
		t.Skip("needs iptables and ip6tables")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare: %w", err)
			return
		}
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			errc <- fmt.Errorf("ip link: %v: %s", err, out)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// TestOriginalDstNAT: a connection REDIRECTed by iptables reports its
// original destination through SO_ORIGINAL_DST and is handed to the virtual
// listener for that address.
func TestOriginalDstNAT(t *testing.T) {
	e := newEnv(t, Options{})
	// Upstream dials run on other threads, in the test's own namespace.
	e.cluster("outer", startBackend(t, greet("outer|")))
	e.cluster("svc", startBackend(t, greet("svc|")))
	orig := netip.MustParseAddrPort("127.0.0.5:9999")
	orig6 := netip.MustParseAddrPort("[::1]:9998")
	err := inNetns(t, func() error {
		outer := tcpListener("outbound", tcpChain("own", "outer"))
		outer.UseOriginalDst = true
		e.listener(outer) // binds on this thread: inside the namespace
		e.listener(&state.Listener{Name: "svc", Address: orig, FilterChains: []*state.FilterChain{tcpChain("svc", "svc")}})
		port := e.srv.Addr("outbound").(*net.TCPAddr).Port
		rule := []string{"-w", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", orig.Addr().String(),
			"--dport", fmt.Sprint(orig.Port()), "-j", "REDIRECT", "--to-ports", fmt.Sprint(port)}
		if out, err := exec.Command("iptables", rule...).CombinedOutput(); err != nil {
			return fmt.Errorf("iptables: %v: %s", err, out)
		}
		// The same over IPv6 (SOL_IPV6 / IP6T_SO_ORIGINAL_DST).
		outer6 := tcpListener("outbound6", tcpChain("own", "outer"))
		outer6.Address = netip.MustParseAddrPort("[::1]:0")
		outer6.UseOriginalDst = true
		e.listener(outer6)
		e.listener(&state.Listener{Name: "svc6", Address: orig6, FilterChains: []*state.FilterChain{tcpChain("svc", "svc")}})
		port6 := e.srv.Addr("outbound6").(*net.TCPAddr).Port
		rule6 := []string{"-w", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", "::1",
			"--dport", fmt.Sprint(orig6.Port()), "-j", "REDIRECT", "--to-ports", fmt.Sprint(port6)}
		if out, err := exec.Command("ip6tables", rule6...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip6tables: %v: %s", err, out)
		}
		cases := []struct{ to, want string }{
			{orig.String(), "svc|"},                       // NATed: handed to svc
			{fmt.Sprintf("127.0.0.1:%d", port), "outer|"}, // direct: ENOENT, served locally
			{orig6.String(), "svc|"},
			{fmt.Sprintf("[::1]:%d", port6), "outer|"},
		}
		for _, tc := range cases {
			c, err := net.DialTimeout("tcp", tc.to, 2*time.Second)
			if err != nil {
				return err
			}
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, len(tc.want))
			_, err = c.Read(buf)
			c.Close()
			if err != nil || string(buf) != tc.want {
				return fmt.Errorf("dial %s: got %q, %v; want %q", tc.to, buf, err, tc.want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st := e.srv.Stats(); st["outbound"].HandedOff != 1 || st["svc"].Accepted != 1 ||
		st["outbound6"].HandedOff != 1 || st["svc6"].Accepted != 1 {
		t.Fatalf("stats = %+v", st)
	}
}
