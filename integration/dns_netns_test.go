package integration

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meshlet/meshlet/capture"
)

// TestDNSCaptureNetns: in a pod namespace whose resolv.conf points at
// 10.99.0.53, the binary runs with --capture iptables --capture-dns. An
// unmodified client (glibc's resolver via getent, uid 1000) asking
// 10.99.0.53:53 is redirected to the DNS proxy on 127.0.0.1:15053: a mesh
// name is answered from the table, an external name is forwarded to the
// real server on 10.99.0.53:53 (the proxy's own query is not captured
// again), over UDP and over TCP, to an IPv4 and an IPv6 resolver
// address. glibc drops replies that do not come
// from the server it asked, so an answer proves the reply left from
// 10.99.0.53:53.
func TestDNSCaptureNetns(t *testing.T) {
	requireCapturePriv(t)
	for _, tool := range []string{"getent", "setpriv"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("needs %s: %v", tool, err)
			}
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	ns := "mdns" + hex.EncodeToString(b)
	run(t, "ip", "netns", "add", ns)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	run(t, "ip", "-n", ns, "addr", "add", "10.99.0.53/32", "dev", "lo")
	run(t, "ip", "-n", ns, "addr", "add", "fd00::53/128", "dev", "lo", "nodad")
	// ip netns exec bind-mounts /etc/netns/NS/resolv.conf over
	// /etc/resolv.conf for what it runs: the client and the proxy.
	etc := filepath.Join("/etc/netns", ns)
	if err := os.MkdirAll(etc, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(etc); _ = os.Remove("/etc/netns") })
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver 10.99.0.53\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	scope := capture.NetNSPath(filepath.Join("/var/run/netns", ns))
	up := startDNSUpstream(t, "10.99.0.53:53", scope.Do)

	boot := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(boot, []byte("node: {id: sidecar~10.99.0.53~app.default~default.svc.cluster.local, cluster: test}\n"+
		"admin: {address: {socket_address: {address: 127.0.0.1, port_value: 15000}}}\n"+dnsBootstrap), 0o600); err != nil {
		t.Fatal(err)
	}
	// The proxy runs as root, so root's traffic is the proxy's own.
	px := startNetnsProxy(t, exec.Command("ip", "netns", "exec", ns, binPath, "run", "--bootstrap", boot,
		"--capture", "iptables", "--capture-dns", "--capture-uid", "0", "--capture-gid", "0", "--capture-inbound", "none",
		"--metrics", "", "--drain-time", "1s"), nil, "capture installed")

	resolve := func(name string, tcp bool) string {
		c := exec.Command("timeout", "10", "ip", "netns", "exec", ns,
			"setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "getent", "ahostsv4", name)
		c.Env = append(os.Environ(), "RES_OPTIONS=attempts:1 timeout:2")
		if tcp {
			c.Env = append(c.Env, "RES_OPTIONS=use-vc attempts:1 timeout:2")
		}
		o, err := c.CombinedOutput()
		if err != nil {
			return "error: " + err.Error() + " " + string(o)
		}
		f := strings.Fields(string(o))
		if len(f) == 0 {
			return ""
		}
		return f[0]
	}
	for _, tc := range []struct {
		name string
		tcp  bool
		want string
	}{
		{"reviews", false, "10.99.0.7"}, // search domain default.svc.cluster.local
		{"reviews.default", true, "10.99.0.7"},
		{"ext.example", false, "192.0.2.1"},
		{"ext.example", true, "192.0.2.1"},
	} {
		if got := resolve(tc.name, tc.tcp); got != tc.want {
			t.Errorf("getent ahostsv4 %s (tcp %v): got %q, want %q", tc.name, tc.tcp, got, tc.want)
		}
	}
	// An IPv6 resolver address: ip6tables redirects to [::1]:15053.
	if err := os.WriteFile(filepath.Join(etc, "resolv.conf"), []byte("nameserver fd00::53\nsearch default.svc.cluster.local\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tcp := range []bool{false, true} {
		if got := resolve("reviews", tcp); got != "10.99.0.7" {
			t.Errorf("via fd00::53 (tcp %v): got %q, want 10.99.0.7", tcp, got)
		}
	}
	// The mesh names never reached the real server; the external name did
	// (once over UDP; over TCP the proxy's cache answered).
	if n := up.queries.Load(); n < 1 || n > 2 {
		t.Errorf("upstream got %d queries, want 1 or 2", n)
	}

	px.stop(t)
	if left := run(t, "ip", "netns", "exec", ns, "iptables-save"); strings.Contains(left, "MESHLET") {
		t.Fatalf("rules left after exit:\n%s", left)
	}
}
