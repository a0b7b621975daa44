package ebpf

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/internal/cgrouptest"
)

func requireInboundSupport(t *testing.T) {
	t.Helper()
	cgrouptest.Require(t)
	cgrouptest.Feature(t, SupportedInbound(), ErrNotSupported)
}

// vethPeer joins a new namespace to pod with a veth pair: pod gets podIP,
// the peer namespace clientIP (both /30).
func vethPeer(t *testing.T, pod *testNetns, podIP, clientIP string) *testNetns {
	t.Helper()
	client := newTestNetns(t)
	a, b := "vi"+filepath.Base(pod.path)[4:12], "vo"+filepath.Base(pod.path)[4:12]
	for _, args := range [][]string{
		{"ip", "link", "add", a, "type", "veth", "peer", "name", b},
		{"ip", "link", "set", a, "netns", filepath.Base(pod.path)},
		{"ip", "link", "set", b, "netns", filepath.Base(client.path)},
		{"ip", "-n", filepath.Base(pod.path), "addr", "add", podIP + "/30", "dev", a},
		{"ip", "-n", filepath.Base(client.path), "addr", "add", clientIP + "/30", "dev", b},
		{"ip", "-n", filepath.Base(pod.path), "link", "set", a, "up"},
		{"ip", "-n", filepath.Base(client.path), "link", "set", b, "up"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			_ = exec.Command("ip", "link", "del", a).Run()
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	return client
}

// lineFrom dials addr inside n and returns the line the server sent, or
// the error.
func lineFrom(n *testNetns, addr string) string {
	var out string
	err := n.do(func() error {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		out, err = bufio.NewReader(c).ReadString('\n')
		return err
	})
	if err != nil {
		return "error: " + err.Error()
	}
	return strings.TrimSpace(out)
}

// TestInboundSteering attaches the sk_lookup program to a pod namespace:
// a connection from another namespace to the pod's 8080 is accepted by the
// proxy's listener on 15006 with 10.98.0.1:8080 as its local address; an
// excluded port and a connection over loopback reach the application;
// without a listener steerable connections are refused; after Unpin
// nothing is attached and 8080 is reached directly.
func TestInboundSteering(t *testing.T) {
	requireInboundSupport(t)
	mnt := cgrouptest.Mount(t)
	pod := newTestNetns(t)
	client := vethPeer(t, pod, "10.98.0.1", "10.98.0.2")

	pod.serve(t, "0.0.0.0:8080", func(*net.TCPConn) string { return "app8080" })
	pod.serve(t, "0.0.0.0:8081", func(*net.TCPConn) string { return "app8081" })
	// The proxy's inbound listener: Go makes 0.0.0.0 a dual-stack
	// AF_INET6 socket, which takes IPv4 from the v6 slot.
	var proxy net.Listener
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	if err := pod.do(func() (err error) { proxy, err = lc.Listen(context.Background(), "tcp", "0.0.0.0:15006"); return err }); err != nil {
		t.Fatal(err)
	}
	proxyDone := make(chan struct{})
	go func() {
		defer close(proxyDone)
		for {
			c, err := proxy.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "proxy local=%s\n", c.LocalAddr())
			c.Close()
		}
	}()
	t.Cleanup(func() { proxy.Close(); <-proxyDone })

	spec, err := LoadInboundSpec()
	if err != nil {
		t.Fatal(err)
	}
	in, err := spec.Load(InboundConfig{ExcludePorts: []uint16{8081}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	// Go's default listener is Multipath TCP, which no sockmap takes.
	var mp net.Listener
	if err := pod.do(func() (err error) { mp, err = net.Listen("tcp", "127.0.0.1:0"); return err }); err != nil {
		t.Fatal(err)
	}
	if err := in.SetListener(mp.(*net.TCPListener)); err == nil || !strings.Contains(err.Error(), "Multipath") {
		t.Errorf("SetListener(MPTCP listener) = %v, want an error naming Multipath TCP", err)
	}
	mp.Close()
	if err := in.SetListener(proxy.(*net.TCPListener)); err != nil {
		t.Fatal(err)
	}
	if c, err := in.ListenerCookies(); err != nil || c[slotV6] == 0 || c[slotV4] != 0 {
		t.Errorf("listener cookies %v (%v), want only the v6 slot set", c, err)
	}
	ns, err := os.Open(pod.path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := in.AttachNetNS(int(ns.Fd())); err != nil {
		t.Fatal(err)
	}
	pins := filepath.Join(mnt.BPFFS, "ns")
	if err := in.Pin(pins); err != nil {
		t.Fatal(err)
	}
	if n, err := AttachedInbound(int(ns.Fd())); err != nil || n != 1 {
		t.Errorf("attached: %d (%v), want 1", n, err)
	}

	for _, tc := range []struct {
		from *testNetns
		addr string
		want string
	}{
		{client, "10.98.0.1:8080", "proxy local=10.98.0.1:8080"},
		{client, "10.98.0.1:8081", "app8081"},                      // excluded by config
		{client, "10.98.0.1:15006", "proxy local=10.98.0.1:15006"}, // the proxy's own port, reached as addressed
		{pod, "10.98.0.1:8080", "app8080"},                         // over loopback: never steered
		{pod, "127.0.0.1:8080", "app8080"},
		{pod, "[::1]:8080", "app8080"},
	} {
		if got := lineFrom(tc.from, tc.addr); got != tc.want {
			t.Errorf("dial %s from %s: %q, want %q", tc.addr, filepath.Base(tc.from.path), got, tc.want)
		}
	}

	// A closed listener leaves the map: capture fails closed.
	proxy.Close()
	<-proxyDone
	if got := lineFrom(client, "10.98.0.1:8080"); !strings.Contains(got, "connection refused") {
		t.Errorf("without a listener: %q, want connection refused", got)
	}
	st, err := in.Stats()
	if err != nil || st.Steered != 1 || st.Refused != 1 {
		t.Errorf("stats %+v (%v), want 1 steered, 1 refused", st, err)
	}

	// The pin keeps the program attached after Close, as after a crash.
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if n, err := AttachedInbound(int(ns.Fd())); err != nil || n != 1 {
		t.Errorf("after Close with pins: %d attached (%v), want 1", n, err)
	}
	if err := Unpin(pins); err != nil {
		t.Fatal(err)
	}
	if n, err := AttachedInbound(int(ns.Fd())); err != nil || n != 0 {
		t.Errorf("after Unpin: %d attached (%v), want 0", n, err)
	}
	if got := lineFrom(client, "10.98.0.1:8080"); got != "app8080" {
		t.Errorf("after Unpin: %q, want app8080", got)
	}
}
