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
)

// captureBootstrap is a sidecar-style configuration: virtualOutbound on
// 15001 with use_original_dst hands captured connections to the
// per-destination (bind_to_port: false) listener for 10.99.0.1:80, and
// passes anything else through to its original destination.
const captureBootstrap = `node: {id: sidecar~10.99.0.1~app.default~default.svc.cluster.local, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 15000}}}
static_resources:
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: backend
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9090}}}}]}]
  - name: passthrough
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
  listeners:
  - name: virtualOutbound
    address: {socket_address: {address: 0.0.0.0, port_value: 15001}}
    use_original_dst: true
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: passthrough, cluster: passthrough}
  - name: 10.99.0.1_80
    address: {socket_address: {address: 10.99.0.1, port_value: 80}}
    bind_to_port: false
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: svc, cluster: backend}
`

func requireCapturePriv(t *testing.T) {
	t.Helper()
	fail := t.Skipf
	if os.Getenv("CI") == "true" {
		fail = t.Fatalf
	}
	if os.Geteuid() != 0 {
		fail("needs root for network namespaces and capture rules")
	}
	for _, tool := range []string{"ip", "iptables", "ip6tables", "nft", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			fail("needs %s: %v", tool, err)
		}
	}
}

func run(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestCaptureSidecar runs the real binary inside a pod namespace with
// --capture: an unmodified client (bash, uid 1000) dialing 10.99.0.1:80
// reaches the backend through the per-destination listener; a destination
// without a listener passes through to where it was headed without looping
// (the proxy's uid is excluded); on SIGTERM the rules are gone.
func TestCaptureSidecar(t *testing.T) {
	for _, backend := range []string{"iptables", "nftables"} {
		t.Run(backend, func(t *testing.T) {
			t.Parallel()
			requireCapturePriv(t)
			b := make([]byte, 5)
			_, _ = rand.Read(b)
			ns := "mcpi" + hex.EncodeToString(b)
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
				t.Cleanup(func() { ln.Close() })
				go func() {
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
			// The proxy runs as root here, so root's traffic is the
			// proxy's own (--capture-uid 0); the client runs as uid 1000.
			px := startNetnsProxy(t, exec.Command("ip", "netns", "exec", ns, binPath, "run", "--bootstrap", boot,
				"--capture", backend, "--capture-uid", "0", "--capture-gid", "0", "--capture-inbound", "none",
				"--metrics", "", "--drain-time", "1s"), nil, "capture installed")

			// The client is bash started from a thread inside the namespace
			// (ip netns exec would lose its privileges to the credential).
			dialAs := func(addr string) string {
				host, port, _ := net.SplitHostPort(addr)
				var o []byte
				_ = scope.Do(func() error {
					c := exec.Command("timeout", "5", "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%s && cat <&3", host, port))
					c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 1000, Gid: 1000}}
					var err error
					if o, err = c.CombinedOutput(); err != nil {
						o = fmt.Appendf(o, " (%v)", err)
					}
					return nil
				})
				return strings.TrimSpace(string(o))
			}
			for _, tc := range []struct{ addr, want string }{
				{"10.99.0.1:80", "backend"},   // captured, per-destination listener
				{"10.99.0.1:81", "direct81"},  // captured, passed through to the original destination
				{"127.0.0.1:9090", "backend"}, // loopback: not captured
			} {
				if got := dialAs(tc.addr); got != tc.want {
					t.Errorf("dial %s: got %q, want %q", tc.addr, got, tc.want)
				}
			}
			if !strings.Contains(run(t, "ip", "netns", "exec", ns, "sh", "-c", "iptables-save; nft list ruleset"), "MESHLET") {
				t.Fatal("no MESHLET rules while running")
			}

			px.stop(t)
			if left := run(t, "ip", "netns", "exec", ns, "sh", "-c", "iptables-save; ip6tables-save; nft list ruleset"); strings.Contains(left, "MESHLET") {
				t.Fatalf("rules left after exit:\n%s", left)
			}
		})
	}
}
