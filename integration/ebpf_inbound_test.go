package integration

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	mebpf "github.com/meshlet/meshlet/ebpf"
	"github.com/meshlet/meshlet/internal/cgrouptest"
)

// ebpfInboundBootstrap is Istio's inbound shape: virtualInbound on 15006
// reads the original destination (original_dst listener filter) and
// passes the connection through to it.
const ebpfInboundBootstrap = `node: {id: sidecar~10.231.0.1~app.default~default.svc.cluster.local, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 15000}}}
static_resources:
  clusters:
  - name: InboundPassthroughClusterIpv4
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    connect_timeout: 1s
  listeners:
  - name: virtualInbound
    address: {socket_address: {address: 0.0.0.0, port_value: 15006}}
    listener_filters:
    - name: envoy.filters.listener.original_dst
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: inbound, cluster: InboundPassthroughClusterIpv4}
`

// TestCaptureEBPFInbound runs the real binary with --capture ebpf
// --capture-inbound ebpf in a pod namespace joined by a veth to a client
// namespace. A client connecting to the pod's 8080 is answered by the app,
// which sees the connection come from the proxy (the pod's own address:
// the inbound passthrough dials the original destination from inside the
// pod), not from the client; an excluded port reaches the app directly;
// after SIGTERM no sk_lookup program is attached, no pin is left, and the
// client reaches the app directly again.
func TestCaptureEBPFInbound(t *testing.T) {
	t.Parallel()
	requireCapturePriv(t)
	requireNetns(t)
	for _, probe := range []func() error{mebpf.Supported, mebpf.SupportedInbound} {
		cgrouptest.Feature(t, probe(), mebpf.ErrNotSupported)
	}
	mnt := cgrouptest.Mount(t)
	appCg := cgrouptest.NewCgroup(t, mnt.Cgroup, "inapp")
	proxyCg := cgrouptest.NewCgroup(t, mnt.Cgroup, "inproxy")
	pins := filepath.Join(mnt.BPFFS, "meshlet")
	p := newNSPair(t) // a: the pod, b: a client elsewhere

	// The app answers every connection with its port and its peer.
	for _, port := range []int{8080, 8081} {
		var ln net.Listener
		if err := inNetns(p.a, func() (err error) { ln, err = net.Listen("tcp", fmt.Sprintf("0.0.0.0:%d", port)); return err }); err != nil {
			netnsFatal(t, "listen: %v", err)
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
				host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				fmt.Fprintf(c, "app%d from %s\n", port, host)
				c.Close()
			}
		}()
	}

	boot := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(boot, []byte(ebpfInboundBootstrap), 0o600); err != nil {
		t.Fatal(err)
	}
	px := startNetnsProxy(t, exec.Command("ip", "netns", "exec", p.a, binPath, "run", "--bootstrap", boot,
		"--capture", "ebpf", "--capture-inbound", "ebpf", "--capture-cgroup", appCg, "--capture-bpffs", pins,
		"--capture-uid", "0", "--capture-gid", "0", "--capture-exclude-ports", "8081,15008,15020,15021,15090",
		"--metrics", "127.0.0.1:15020", "--drain-time", "1s"), func(c *exec.Cmd) error {
		release := cgrouptest.InCgroup(t, c, proxyCg)
		defer release()
		return c.Start()
	}, "capture installed")
	if out := px.out.String(); !strings.Contains(out, "backend=ebpf") || !strings.Contains(out, "ebpf inbound capture: listener set") {
		t.Fatalf("ebpf inbound capture not in place:\n%s", out)
	}

	dial := func(addr string) string {
		t.Helper()
		var line string
		err := inNetns(p.b, func() error {
			c, err := net.DialTimeout("tcp", addr, 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			line, err = bufio.NewReader(c).ReadString('\n')
			return err
		})
		if err != nil {
			return "error: " + err.Error()
		}
		return strings.TrimSpace(line)
	}
	attached := func() int {
		t.Helper()
		f, err := os.Open("/var/run/netns/" + p.a)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		n, err := mebpf.AttachedInbound(int(f.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	for _, tc := range []struct{ addr, want string }{
		// Steered to 15006, passed through to 10.231.0.1:8080 by the
		// proxy from inside the pod.
		{p.aIP + ":8080", "app8080 from " + p.aIP},
		// Excluded (--capture-exclude-ports): straight to the app.
		{p.aIP + ":8081", "app8081 from " + p.bIP},
	} {
		if got := dial(tc.addr); got != tc.want {
			t.Errorf("dial %s: %q, want %q", tc.addr, got, tc.want)
		}
	}
	if n := attached(); n != 1 {
		t.Errorf("while running: %d sk_lookup programs attached to the pod namespace, want 1", n)
	}
	// The metrics port shows the backend in place and counts the steered
	// connection.
	fams := scrapeNetns(t, p.a, "http://127.0.0.1:15020/stats/prometheus")
	if v := sumWhere(fams, "meshlet_capture_ebpf_inbound_steered_total", nil); v < 1 {
		t.Errorf("meshlet_capture_ebpf_inbound_steered_total = %v, want >= 1", v)
	}
	if v := sumWhere(fams, "meshlet_capture_info", map[string]string{"backend": "ebpf", "inbound": "ebpf", "fallback": "false"}); v != 1 {
		t.Errorf("meshlet_capture_info{backend=ebpf,inbound=ebpf,fallback=false} = %v, want 1", v)
	}

	px.stop(t)
	if n := attached(); n != 0 {
		t.Errorf("after exit: %d sk_lookup programs attached, want 0", n)
	}
	if ents, _ := os.ReadDir(pins); len(ents) > 0 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("pins left after exit: %v", names)
	}
	if got, want := dial(p.aIP+":8080"), "app8080 from "+p.bIP; got != want {
		t.Errorf("dial after exit: %q, want %q", got, want)
	}
}

// scrapeNetns is scrape for a metrics port inside netns.
func scrapeNetns(t *testing.T, netns, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := nsClient(netns).Get(url)
	if err != nil {
		t.Fatalf("scrape %s in %s: %v", url, netns, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("scrape %s in %s: %s", url, netns, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse %s: %v", url, err)
	}
	return fams
}
