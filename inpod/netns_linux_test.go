package inpod

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/capture"
)

// Privileged tests: real pod network namespaces (ip netns add, unique
// names of at most 15 characters, deleted afterwards) with iptables or
// nftables programmed by the Server. Under CI=true missing privileges or
// tools fail instead of skipping.

func requireRoot(t *testing.T, tools ...string) {
	t.Helper()
	fail := t.Skipf
	if os.Getenv("CI") == "true" {
		fail = t.Fatalf
	}
	if os.Geteuid() != 0 {
		fail("needs root for network namespaces")
	}
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			fail("needs %s: %v", tool, err)
		}
	}
}

func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// addNetns creates a namespace with lo up and returns its name and an open
// descriptor.
func addNetns(t *testing.T, prefix string) (string, *os.File) {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	name := prefix + hex.EncodeToString(b)
	sh(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	sh(t, "ip", "-n", name, "link", "set", "lo", "up")
	f, err := os.Open(filepath.Join("/var/run/netns", name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return name, f
}

// serveIn answers each connection inside ns with "saw REMOTE" and then
// echoes lines until the client closes.
func serveIn(t *testing.T, ns *os.File, addr string) {
	t.Helper()
	var ln *net.TCPListener
	ln, err := listenIn(ns, addr, false)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	conns := make(chan net.Conn, 64)
	t.Cleanup(func() {
		ln.Close()
		<-done
		close(conns)
		for c := range conns {
			c.Close()
		}
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case conns <- c:
			default:
			}
			go func() {
				defer c.Close()
				_, _ = io.WriteString(c, "saw "+c.RemoteAddr().String()+"\n")
				buf := make([]byte, 512)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
}

// dialFrom connects from inside ns and returns the server's greeting, the
// client's local address and the open connection.
func dialFrom(t *testing.T, ns *os.File, addr string) (string, string, net.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := dialIn(ctx, ns, 0, netip.Addr{}, "tcp", addr)
	if err != nil {
		return "dial: " + err.Error(), "", nil
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		return "read: " + err.Error(), c.LocalAddr().String(), c
	}
	return strings.TrimSpace(line), c.LocalAddr().String(), c
}

// meshletRules lists what capture left in ns: rules, tables, fwmark
// policy rules.
func meshletRules(t *testing.T, name string) []string {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", name, "sh", "-c",
		"iptables-legacy-save 2>/dev/null; iptables-nft-save 2>/dev/null; ip6tables-legacy-save 2>/dev/null; ip6tables-nft-save 2>/dev/null; nft list ruleset; ip -4 rule; ip -6 rule").CombinedOutput()
	var ours []string
	for l := range strings.Lines(string(out)) {
		// Chains and tables by name; TPROXY's policy routing by fwmark.
		if strings.Contains(l, "MESHLET") || strings.Contains(l, "fwmark") {
			ours = append(ours, strings.TrimSpace(l))
		}
	}
	return ours
}

// TestPodNetnsCapture: a pod added over the socket gets its listeners and
// rules inside its own netns. Its application's next outbound connection
// goes through the proxy (the peer sees the proxy's socket, not the
// client's); inbound traffic from an uncaptured peer reaches the pod through the proxy (the
// app sees a connection from inside its own netns). Deleting the pod
// removes every rule and listener: traffic flows directly again.
func TestPodNetnsCapture(t *testing.T) {
	for _, tc := range []struct {
		backend string
		inbound capture.InboundMode
	}{
		{capture.BackendIPTables, capture.InboundRedirect},
		{capture.BackendNFTables, capture.InboundRedirect},
		{capture.BackendIPTables, capture.InboundTProxy},
		{capture.BackendNFTables, capture.InboundTProxy},
	} {
		backend := tc.backend
		name := backend + map[capture.InboundMode]string{capture.InboundRedirect: "", capture.InboundTProxy: "/tproxy"}[tc.inbound]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			requireRoot(t, "ip", "iptables", "nft")
			podName, pod, peerName, peer := podAndPeer(t)
			serveIn(t, peer, "10.66.0.3:80")
			serveIn(t, pod, "10.66.0.2:8080")

			// Before the pod is added: direct both ways.
			got, local, _ := dialFrom(t, pod, "10.66.0.3:80")
			if got != "saw "+local {
				t.Fatalf("before add, outbound: %q from %s", got, local)
			}
			if got, local, _ := dialFrom(t, peer, "10.66.0.2:8080"); got != "saw "+local {
				t.Fatalf("before add, inbound: %q from %s", got, local)
			}

			srv, cl := startServer(t, backend, tc.inbound)
			if err := cl.Add("pod-uid", WorkloadInfo{Name: "p", Namespace: "ns", ServiceAccount: "sa"}, pod); err != nil {
				t.Fatalf("add: %v", err)
			}
			if rules := meshletRules(t, podName); len(rules) == 0 {
				t.Fatal("no MESHLET rules in the pod netns after add")
			}
			if rules := meshletRules(t, peerName); len(rules) != 0 {
				t.Fatalf("rules outside the pod netns: %q", rules)
			}

			// The next one is captured: the peer sees the proxy's socket
			// (same pod address, another port).
			got, local, _ = dialFrom(t, pod, "10.66.0.3:80")
			if !strings.HasPrefix(got, "saw 10.66.0.2:") || got == "saw "+local {
				t.Fatalf("after add, outbound: %q from %s, want the proxy's socket", got, local)
			}
			// Inbound from the uncaptured peer: delivered by the proxy from
			// inside the pod, from the peer's own address (the app sees
			// its real client, and its replies find their way back).
			if got, local, _ := dialFrom(t, peer, "10.66.0.2:8080"); !strings.HasPrefix(got, "saw 10.66.0.3:") {
				t.Fatalf("after add, inbound: %q from %s, want the peer's address", got, local)
			}
			st := srv.Pods()
			if len(st) != 1 || st[0].Outbound != 1 || st[0].Inbound != 1 || st[0].Capture == "" {
				t.Fatalf("pod status: %+v", st)
			}

			if err := cl.Del("pod-uid"); err != nil {
				t.Fatalf("del: %v", err)
			}
			// The return path of original-source delivery stays until the
			// pod's connections drained (DrainTimeout).
			waitNoRules(t, podName)
			if got, _, _ := dialFrom(t, pod, "127.0.0.1:15001"); !strings.Contains(got, "refused") {
				t.Fatalf("outbound listener after del: %q", got)
			}
			if got, local, _ := dialFrom(t, pod, "10.66.0.3:80"); got != "saw "+local {
				t.Fatalf("after del, outbound: %q from %s, want direct", got, local)
			}
			if got, local, _ := dialFrom(t, peer, "10.66.0.2:8080"); got != "saw "+local {
				t.Fatalf("after del, inbound: %q from %s, want direct", got, local)
			}
		})
	}
}

// podAndPeer makes a pod netns (10.66.0.2) and an uncaptured peer netns
// (10.66.0.3) joined by a veth pair.
func podAndPeer(t *testing.T) (podName string, pod *os.File, peerName string, peer *os.File) {
	t.Helper()
	podName, pod = addNetns(t, "mipp")
	peerName, peer = addNetns(t, "mipq")
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	veth := "mipv" + hex.EncodeToString(b)
	sh(t, "ip", "link", "add", veth+"a", "netns", podName, "type", "veth", "peer", "name", veth+"b", "netns", peerName)
	sh(t, "ip", "-n", podName, "addr", "add", "10.66.0.2/24", "dev", veth+"a")
	sh(t, "ip", "-n", peerName, "addr", "add", "10.66.0.3/24", "dev", veth+"b")
	sh(t, "ip", "-n", podName, "link", "set", veth+"a", "up")
	sh(t, "ip", "-n", peerName, "link", "set", veth+"b", "up")
	return podName, pod, peerName, peer
}

// startServer serves the in-pod socket with a Forwarder and capture by
// backend, and returns it with a connected agent. Both are closed at the
// end of the test (connections still open then are cut after a second).
func startServer(t *testing.T, backend string, inbound capture.InboundMode, opts ...func(*Options)) (*Server, *Client) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ztunnel.sock")
	o := Options{SocketPath: path, Handler: &Forwarder{}, Capture: backend,
		CaptureConfig: capture.Config{Inbound: inbound, DisableDNS: true},
		DrainTimeout:  time.Second, Log: slog.New(slog.DiscardHandler)}
	for _, f := range opts {
		f(&o)
	}
	srv, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Close(ctx)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return srv, cl
}

// waitNoRules waits (bounded) until nothing of ours is left in the netns.
func waitNoRules(t *testing.T, name string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		rules := meshletRules(t, name)
		if len(rules) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rules left in %s: %q", name, rules)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPodNoOriginalSource: with original-source delivery off, inbound
// connections reach the pod from its own address and no return path is
// programmed (only capture's own chains).
func TestPodNoOriginalSource(t *testing.T) {
	for _, backend := range []string{capture.BackendIPTables, capture.BackendNFTables} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			requireRoot(t, "ip", "iptables", "nft")
			podName, pod, _, peer := podAndPeer(t)
			serveIn(t, pod, "10.66.0.2:8080")
			_, cl := startServer(t, backend, capture.InboundRedirect, func(o *Options) { o.NoOriginalSource = true })
			if err := cl.Add("pod-uid", WorkloadInfo{Name: "p", Namespace: "ns"}, pod); err != nil {
				t.Fatalf("add: %v", err)
			}
			if got, _, _ := dialFrom(t, peer, "10.66.0.2:8080"); !strings.HasPrefix(got, "saw 10.66.0.2:") {
				t.Fatalf("inbound: %q, want the pod's own address", got)
			}
			for _, r := range meshletRules(t, podName) {
				if strings.Contains(r, "INPOD") || strings.Contains(r, "fwmark") {
					t.Errorf("return path programmed although off: %q", r)
				}
			}
		})
	}
}
