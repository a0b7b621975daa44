package capture

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Privileged tests: each makes its own network namespaces (ip netns add,
// unique names of at most 15 characters), programs rules only there, and
// deletes the namespaces afterwards. Under CI=true a missing privilege or
// tool fails the test instead of skipping it.

// helperEnv makes the test binary act as a TCP client (see TestMain).
const helperEnv = "MESHLET_CAPTURE_DIAL"

func TestMain(m *testing.M) {
	if addr := os.Getenv(helperEnv); addr != "" {
		os.Exit(helperDial(addr))
	}
	// The client copy is written before any test forks: a file open for
	// writing while another goroutine forks leaks into the child and makes
	// exec fail with ETXTBSY.
	var cleanup func()
	clientExe, cleanup = writeClientBinary()
	code := m.Run()
	cleanup()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// helperDial connects to addr, prints the first line it reads and exits.
func helperDial(addr string) int {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		fmt.Println("dial error:", err)
		return 1
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Println("read error:", err)
		return 1
	}
	fmt.Print(line)
	return 0
}

func requirePriv(t *testing.T, tools ...string) {
	t.Helper()
	fail := t.Skipf
	if os.Getenv("CI") == "true" {
		fail = t.Fatalf
	}
	if os.Geteuid() != 0 {
		fail("needs root (CAP_NET_ADMIN) for network namespaces")
	}
	for _, tool := range append([]string{"ip"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			fail("needs %s: %v", tool, err)
		}
	}
}

// netns is a named namespace made for one test.
type netns struct {
	name  string
	scope Scope
}

func sh(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// newNetns adds a namespace with lo up, holding also 10.99.0.1 and
// fd00::1 (the non-loopback addresses clients dial).
func newNetns(t *testing.T) *netns {
	t.Helper()
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	name := "mcap" + hex.EncodeToString(b) // 14 characters
	sh(t, "ip", "netns", "add", name)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	ns := &netns{name: name, scope: NetNSPath(filepath.Join("/var/run/netns", name))}
	sh(t, "ip", "-n", name, "link", "set", "lo", "up")
	// The kernel here has no dummy links; lo holds the extra addresses.
	sh(t, "ip", "-n", name, "addr", "add", "10.99.0.1/32", "dev", "lo")
	sh(t, "ip", "-n", name, "addr", "add", "fd00::1/128", "dev", "lo", "nodad")
	return ns
}

// serve listens on addr inside ns; each connection gets one line from
// answer, then is closed. The listener closes with the test.
func (ns *netns) serve(t *testing.T, addr string, answer func(net.Conn) string) {
	t.Helper()
	var ln net.Listener
	err := ns.scope.Do(func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	})
	if err != nil {
		t.Fatalf("listen %s in %s: %v", addr, ns.name, err)
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
			_, _ = io.WriteString(c, answer(c)+"\n")
			c.Close()
		}
	}()
}

// proxyAnswer reports the original destination, as a captured proxy
// listener sees it.
func proxyAnswer(r Redirector) func(net.Conn) string {
	return func(c net.Conn) string {
		od, err := r.OriginalDst(c)
		if err != nil {
			return "proxy error " + err.Error()
		}
		return "proxy " + od.String()
	}
}

// dial runs the test binary as a client inside ns, as uid/gid (nil: root).
func (ns *netns) dial(t *testing.T, addr string, cred *syscall.Credential) string {
	t.Helper()
	exe := clientBinary(t)
	var out []byte
	_ = ns.scope.Do(func() error {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), helperEnv+"="+addr)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		var err error
		if out, err = cmd.CombinedOutput(); err != nil && len(out) == 0 {
			out = []byte("exec error: " + err.Error())
		}
		return nil
	})
	return strings.TrimSpace(string(out))
}

// clientExe is a world-executable copy of the test binary, so it can run
// as an unprivileged uid ("" if it could not be written).
var clientExe string

func writeClientBinary() (string, func()) {
	dir, err := os.MkdirTemp("", "meshlet-capture-")
	if err != nil {
		return "", func() {}
	}
	cleanup := func() { os.RemoveAll(dir) }
	self, err := os.Executable()
	if err != nil {
		return "", cleanup
	}
	data, err := os.ReadFile(self)
	if err != nil || os.Chmod(dir, 0o755) != nil {
		return "", cleanup
	}
	exe := filepath.Join(dir, "client")
	if err := os.WriteFile(exe, data, 0o755); err != nil {
		return "", cleanup
	}
	return exe, cleanup
}

func clientBinary(t *testing.T) string {
	t.Helper()
	if clientExe == "" {
		t.Fatal("no client binary copy")
	}
	return clientExe
}

var counters = regexp.MustCompile(`counter packets \d+ bytes \d+`)

// snapshot is everything capture could leave in ns: the rules of both
// iptables variants in the tables we use, the nftables ruleset, policy
// rules and the TPROXY route table.
func (ns *netns) snapshot(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	// iptables-nft creates its tables when listing them: the nftables
	// listing comes last so every snapshot sees the same set of tables.
	var cmds [][]string
	for _, bin := range []string{"iptables-legacy", "ip6tables-legacy", "iptables-nft", "ip6tables-nft"} {
		for _, table := range []string{"nat", "mangle"} {
			cmds = append(cmds, []string{bin, "-w", "-t", table, "-S"})
		}
	}
	cmds = append(cmds, [][]string{
		{"ip", "-4", "rule"}, {"ip", "-6", "rule"},
		{"ip", "-4", "route", "show", "table", "133"}, {"ip", "-6", "route", "show", "table", "133"},
		{"nft", "list", "table", "inet", nftTable},
		{"nft", "list", "ruleset"},
	}...)
	for _, c := range cmds {
		out, _ := exec.Command("ip", append([]string{"netns", "exec", ns.name}, c...)...).Output()
		// Sorted lines: the same rules, whatever order iptables-nft
		// re-created its base chains in; counters and empty lines dropped.
		var lines []string
		for l := range strings.Lines(counters.ReplaceAllString(string(out), "counter")) {
			if l = strings.TrimRight(l, "\n"); strings.TrimSpace(l) != "" {
				lines = append(lines, l)
			}
		}
		slices.Sort(lines)
		fmt.Fprintf(&b, "## %s\n%s\n", strings.Join(c, " "), strings.Join(lines, "\n"))
	}
	return b.String()
}

// ours lists snapshot lines that belong to capture: anything naming a
// MESHLET_ chain or table, every line of our nftables table, policy rules
// by fwmark and routes in the TPROXY table.
func ours(snap string) []string {
	var out []string
	inTable := false
	for l := range strings.Lines(snap) {
		if strings.HasPrefix(l, "## ") {
			inTable = strings.Contains(l, nftTable)
			continue
		}
		if strings.TrimSpace(l) == "" {
			continue
		}
		if inTable || strings.Contains(l, "MESHLET") || strings.Contains(l, "fwmark") || strings.HasPrefix(l, "local ") {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return out
}

var backends = []string{BackendIPTablesLegacy, BackendIPTablesNFT, BackendNFTables}

func backendTools(b string) []string {
	switch b {
	case BackendIPTablesLegacy:
		return []string{"iptables-legacy", "ip6tables-legacy", "nft"}
	case BackendIPTablesNFT:
		return []string{"iptables-nft", "ip6tables-nft", "nft"}
	}
	return []string{"nft", "iptables-legacy", "iptables-nft"} // the latter for snapshots
}

func install(t *testing.T, backend string, cfg Config, ns *netns) Redirector {
	t.Helper()
	r, err := New(backend, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Install(ctx, ns.scope); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Remove(context.Background()) })
	return r
}

// TestOutboundCapture: an unmodified client's connections to remote
// addresses (v4 and v6) reach the outbound listener, which learns the
// original destination; the proxy's uid, excluded ports and loopback are
// left alone; DNS goes to 15053.
func TestOutboundCapture(t *testing.T) {
	for _, backend := range backends {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			requirePriv(t, backendTools(backend)...)
			ns := newNetns(t)
			r := install(t, backend, Config{OutboundExcludePorts: []uint16{81}, Inbound: InboundNone}, ns)
			ns.serve(t, ":15001", proxyAnswer(r))
			ns.serve(t, ":80", func(net.Conn) string { return "app80" })
			ns.serve(t, ":81", func(net.Conn) string { return "app81" })
			proxyUser := &syscall.Credential{Uid: 1337, Gid: 1337}
			appUser := &syscall.Credential{Uid: 1000, Gid: 1000}
			tests := []struct {
				name, addr string
				cred       *syscall.Credential
				want       string
			}{
				{"v4 captured", "10.99.0.1:80", nil, "proxy 10.99.0.1:80"},
				{"v6 captured", "[fd00::1]:80", nil, "proxy [fd00::1]:80"},
				{"other uid captured", "10.99.0.1:80", appUser, "proxy 10.99.0.1:80"},
				{"proxy uid not captured", "10.99.0.1:80", proxyUser, "app80"},
				{"proxy uid not captured v6", "[fd00::1]:80", proxyUser, "app80"},
				{"excluded port", "10.99.0.1:81", nil, "app81"},
				{"excluded port v6", "[fd00::1]:81", nil, "app81"},
				{"loopback not captured", "127.0.0.1:80", nil, "app80"},
				{"loopback v6 not captured", "[::1]:80", nil, "app80"},
			}
			for _, tc := range tests {
				if got := ns.dial(t, tc.addr, tc.cred); got != tc.want {
					t.Errorf("%s: dial %s: got %q, want %q", tc.name, tc.addr, got, tc.want)
				}
			}
			// DNS over UDP lands on the DNS port; the reply comes back from
			// the address the client asked.
			var ans string
			err := ns.scope.Do(func() error {
				pc, err := net.ListenPacket("udp", "127.0.0.1:15053") // replies must leave from the redirect target for conntrack to un-NAT them
				if err != nil {
					return err
				}
				defer pc.Close()
				go func() {
					buf := make([]byte, 512)
					n, from, err := pc.ReadFrom(buf)
					if err == nil {
						_, _ = pc.WriteTo(append([]byte("dns:"), buf[:n]...), from)
					}
				}()
				c, err := net.Dial("udp", "10.99.0.1:53")
				if err != nil {
					return err
				}
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := c.Write([]byte("q")); err != nil {
					return err
				}
				buf := make([]byte, 64)
				n, err := c.Read(buf)
				ans = string(buf[:n])
				return err
			})
			if err != nil || ans != "dns:q" {
				t.Errorf("udp dns: got %q, %v; want dns:q", ans, err)
			}
		})
	}
}

// TestInstallIdempotentRemoveClean: Install twice leaves the same rules as
// once; Remove leaves none of ours; a crashed run's leftovers (another
// configuration, never removed) are replaced by the next Install.
func TestInstallIdempotentRemoveClean(t *testing.T) {
	for _, backend := range backends {
		for _, mode := range []InboundMode{InboundRedirect, InboundTProxy} {
			t.Run(fmt.Sprintf("%s/inbound%d", backend, mode), func(t *testing.T) {
				t.Parallel()
				requirePriv(t, backendTools(backend)...)
				ns := newNetns(t)
				ctx := context.Background()
				cfg := Config{Inbound: mode, InboundExcludePorts: []uint16{15008, 15021}}
				r, err := New(backend, cfg)
				if err != nil {
					t.Fatal(err)
				}
				if err := r.Install(ctx, ns.scope); err != nil {
					t.Fatal(err)
				}
				once := ns.snapshot(t)
				if len(ours(once)) < 5 {
					t.Fatalf("install left few rules:\n%s", once)
				}
				if err := r.Install(ctx, ns.scope); err != nil {
					t.Fatal(err)
				}
				if twice := ns.snapshot(t); twice != once {
					t.Fatalf("second install differs:\n%s\nvs once:\n%s", twice, once)
				}
				if err := r.Remove(ctx); err != nil {
					t.Fatal(err)
				}
				if left := ours(ns.snapshot(t)); len(left) != 0 {
					t.Fatalf("remove left %q", left)
				}
				if err := r.Remove(ctx); err != nil {
					t.Fatalf("second remove: %v", err)
				}

				// Crash: a run with another configuration installs and dies.
				crashed, err := New(backend, Config{Inbound: InboundTProxy, OutboundExcludePorts: []uint16{22, 23},
					OutboundIncludeCIDRs: nil, DisableDNS: true, TProxyTable: 133})
				if err != nil {
					t.Fatal(err)
				}
				if err := crashed.Install(ctx, ns.scope); err != nil {
					t.Fatal(err)
				}
				if crashedSnap := ns.snapshot(t); crashedSnap == once {
					t.Fatal("crash configuration indistinguishable from the test's")
				}
				next, err := New(backend, cfg)
				if err != nil {
					t.Fatal(err)
				}
				if err := next.Install(ctx, ns.scope); err != nil {
					t.Fatal(err)
				}
				// Compared on our lines only: iptables-nft keeps the empty
				// built-in chains the crashed run made it create.
				if after, want := strings.Join(ours(ns.snapshot(t)), "\n"), strings.Join(ours(once), "\n"); after != want {
					t.Fatalf("install over leftovers differs:\n%s\nwant:\n%s", after, want)
				}
				if err := next.Remove(ctx); err != nil {
					t.Fatal(err)
				}
				if left := ours(ns.snapshot(t)); len(left) != 0 {
					t.Fatalf("remove after crash cleanup left %q", left)
				}
			})
		}
	}
}

// TestInboundCapture: a client in another namespace connects over a veth to
// the pod's address; inbound capture (REDIRECT or TPROXY) hands the
// connection to 15006 with the original destination intact, and an
// excluded port still reaches the application.
func TestInboundCapture(t *testing.T) {
	for _, backend := range backends {
		for _, mode := range []InboundMode{InboundRedirect, InboundTProxy} {
			t.Run(fmt.Sprintf("%s/inbound%d", backend, mode), func(t *testing.T) {
				t.Parallel()
				requirePriv(t, backendTools(backend)...)
				pod, client := newNetns(t), newNetns(t)
				sh(t, "ip", "-n", pod.name, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", client.name)
				sh(t, "ip", "-n", pod.name, "addr", "add", "10.200.0.2/24", "dev", "v0")
				sh(t, "ip", "-n", pod.name, "addr", "add", "fd00:200::2/64", "dev", "v0", "nodad")
				sh(t, "ip", "-n", client.name, "addr", "add", "10.200.0.1/24", "dev", "v1")
				sh(t, "ip", "-n", client.name, "addr", "add", "fd00:200::1/64", "dev", "v1", "nodad")
				sh(t, "ip", "-n", pod.name, "link", "set", "v0", "up")
				sh(t, "ip", "-n", client.name, "link", "set", "v1", "up")

				r := install(t, backend, Config{Inbound: mode, InboundExcludePorts: []uint16{8081},
					DisableOutbound: true, DisableDNS: true}, pod)
				answer := proxyAnswer(r)
				if mode == InboundTProxy {
					var ln net.Listener
					err := pod.scope.Do(func() (err error) {
						ln, err = ListenTransparent(context.Background(), "tcp", ":15006")
						return err
					})
					if err != nil {
						t.Fatal(err)
					}
					go func() {
						for {
							c, err := ln.Accept()
							if err != nil {
								return
							}
							_, _ = io.WriteString(c, answer(c)+"\n")
							c.Close()
						}
					}()
					t.Cleanup(func() { ln.Close() })
				} else {
					pod.serve(t, ":15006", answer)
				}
				// A real application listener on the captured port: with
				// TPROXY it must still not bypass the proxy.
				pod.serve(t, ":8080", func(net.Conn) string { return "app8080" })
				pod.serve(t, ":8081", func(net.Conn) string { return "app8081" })
				tests := []struct{ addr, want string }{
					{"10.200.0.2:8080", "proxy 10.200.0.2:8080"},
					{"[fd00:200::2]:8080", "proxy [fd00:200::2]:8080"},
					{"10.200.0.2:8081", "app8081"},
					{"[fd00:200::2]:8081", "app8081"},
				}
				for _, tc := range tests {
					if got := client.dial(t, tc.addr, nil); got != tc.want {
						t.Errorf("dial %s: got %q, want %q", tc.addr, got, tc.want)
					}
				}
			})
		}
	}
}
