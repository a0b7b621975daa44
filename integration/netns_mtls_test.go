package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"golang.org/x/sys/unix"
)

// The namespaced mTLS wire test: "pod" A (client + client proxy) and "pod"
// B (server proxy + backend) are network namespaces joined by a veth pair.
// A packet capture on B's veth end shows what actually crosses between the
// pods.

const (
	nsServerPort  = 15006 // server proxy inbound, on B's veth address
	nsOutPort     = 15001 // client proxy outbound, loopback in A
	nsBackendPort = 8080  // backend, loopback in B
	nsAdminPort   = 15000 // each proxy's admin, loopback in its own netns
	// nsMarker is the plaintext that must never be on the wire under mTLS.
	nsMarker = "MESHLET-PLAINTEXT-MARKER-7f3a9c"
)

var nsSeq atomic.Int64

// requireNetns skips, or under CI=true fails, when this host cannot run a
// namespaced test.
func requireNetns(t *testing.T) {
	t.Helper()
	why := ""
	switch {
	case runtime.GOOS != "linux":
		why = "network namespaces need Linux"
	case os.Geteuid() != 0:
		why = "network namespaces need root"
	default:
		if _, err := exec.LookPath("ip"); err != nil {
			why = "iproute2 (ip) is not installed"
		}
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("namespaced test cannot run under CI=true: %s", why)
	}
	t.Skip(why)
}

// netnsFatal ends the test on a setup failure that means the host lacks a
// privilege or kernel feature: Skip normally, Fatal under CI=true.
func netnsFatal(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format, args...)
	}
	t.Skipf(format, args...)
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// nsPair is two namespaces joined by a veth pair with addresses aIP/bIP.
type nsPair struct {
	a, b     string // netns names
	vethA    string // veth end in a
	vethB    string // veth end in b
	aIP, bIP string
}

// newNSPair creates the namespaces and the veth. Everything is removed in
// t.Cleanup, including after a failed setup step. Names are unique per
// test (pid + sequence) and at most 15 characters.
func newNSPair(t *testing.T) *nsPair {
	t.Helper()
	id := fmt.Sprintf("%d%d", os.Getpid()%100000, nsSeq.Add(1)%100)
	p := &nsPair{a: "mlA" + id, b: "mlB" + id, vethA: "mva" + id, vethB: "mvb" + id, aIP: "10.231.0.1", bIP: "10.231.0.2"}
	t.Cleanup(func() {
		// Deleting a netns deletes the veth end inside it and so its peer;
		// the explicit link delete covers a failure before the move.
		_ = exec.Command("ip", "link", "del", p.vethA).Run()
		for _, ns := range []string{p.a, p.b} {
			if _, err := os.Stat("/var/run/netns/" + ns); err == nil {
				if err := ipCmd("netns", "del", ns); err != nil {
					t.Errorf("cleanup: %v", err)
				}
			}
		}
	})
	for _, ns := range []string{p.a, p.b} {
		if err := ipCmd("netns", "add", ns); err != nil {
			netnsFatal(t, "create netns: %v", err)
		}
	}
	steps := [][]string{
		{"link", "add", p.vethA, "type", "veth", "peer", "name", p.vethB},
		{"link", "set", p.vethA, "netns", p.a},
		{"link", "set", p.vethB, "netns", p.b},
		{"-n", p.a, "addr", "add", p.aIP + "/30", "dev", p.vethA},
		{"-n", p.b, "addr", "add", p.bIP + "/30", "dev", p.vethB},
		{"-n", p.a, "link", "set", "lo", "up"},
		{"-n", p.b, "link", "set", "lo", "up"},
		{"-n", p.a, "link", "set", p.vethA, "up"},
		{"-n", p.b, "link", "set", p.vethB, "up"},
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			netnsFatal(t, "veth setup: %v", err)
		}
	}
	return p
}

// inNetns runs fn on an OS thread switched into netns name. Sockets fn
// creates stay in that netns. The thread stays locked so that it exits
// with the goroutine instead of serving other goroutines in the wrong
// netns.
func inNetns(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + name)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// nsClient is an HTTP client whose connections are dialed inside netns.
func nsClient(netns string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = inNetns(netns, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}
}

// startNSBackend serves, inside netns, an HTTP server that answers with
// whether the request body held the marker, followed by the body.
func startNSBackend(t *testing.T, netns string) {
	t.Helper()
	var lis net.Listener
	if err := inNetns(netns, func() (err error) {
		lis, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", nsBackendPort))
		return err
	}); err != nil {
		netnsFatal(t, "listen in netns %s: %v", netns, err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "backend got marker=%t\n", bytes.Contains(body, []byte(nsMarker)))
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
}

// runNSProxy runs the binary inside netns with `ip netns exec` and waits
// for its admin /ready (reached from inside the netns).
func runNSProxy(t *testing.T, netns, resources string, env []string, args ...string) {
	t.Helper()
	boot := fmt.Sprintf("node: {id: sidecar~127.0.0.1~netns.default~default.svc.cluster.local, cluster: test}\nadmin:\n  address: {socket_address: {address: 127.0.0.1, port_value: %d}}\n%s", nsAdminPort, resources)
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(boot), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &lockedBuf{}
	cmd := exec.Command("ip", append([]string{"netns", "exec", netns, binPath, "run", "--bootstrap", path, "--drain-time", "1s"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		// ip netns exec execs the binary, so this pid is the proxy.
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("ztunnel in %s output:\n%s", netns, out.String())
		}
	})
	c := nsClient(netns)
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			t.Fatalf("ztunnel in %s exited before ready:\n%s", netns, out.String())
		default:
		}
		if resp, err := c.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", nsAdminPort)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("ztunnel in %s not ready:\n%s", netns, out.String())
}

// wireCapture collects the TCP payload sent to and from one port on a
// veth, captured with pcapgo inside the veth's netns.
type wireCapture struct {
	h       *pcapgo.EthernetHandle
	stopped atomic.Bool
	done    chan struct{}

	mu           sync.Mutex
	toPort       []byte // payload bytes to port, in capture order
	fromPort     []byte
	tcpSegments  int
	readErr      error
	netns, iface string
}

func startCapture(t *testing.T, netns, iface string, port uint16) *wireCapture {
	t.Helper()
	c := &wireCapture{done: make(chan struct{}), netns: netns, iface: iface}
	if err := inNetns(netns, func() (err error) {
		c.h, err = pcapgo.NewEthernetHandle(iface)
		return err
	}); err != nil {
		netnsFatal(t, "AF_PACKET capture on %s in %s: %v", iface, netns, err)
	}
	// The default is the MTU; veth offloads hand the socket larger frames.
	if err := c.h.SetCaptureLength(65536); err != nil {
		c.h.Close()
		t.Fatal(err)
	}
	go func() {
		defer close(c.done)
		for {
			data, _, err := c.h.ReadPacketData()
			if c.stopped.Load() {
				return
			}
			if err != nil {
				c.mu.Lock()
				c.readErr = err
				c.mu.Unlock()
				return
			}
			c.add(data, port)
		}
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *wireCapture) add(data []byte, port uint16) {
	pkt := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.NoCopy)
	tl, ok := pkt.Layer(layers.LayerTypeTCP).(*layers.TCP)
	if !ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tcpSegments++
	switch {
	case uint16(tl.DstPort) == port:
		c.toPort = append(c.toPort, tl.Payload...)
	case uint16(tl.SrcPort) == port:
		c.fromPort = append(c.fromPort, tl.Payload...)
	}
}

// stop ends the capture. A blocked AF_PACKET read is woken by taking the
// link down (the kernel reports ENETDOWN to the socket).
func (c *wireCapture) stop() {
	if !c.stopped.CompareAndSwap(false, true) {
		return
	}
	_ = ipCmd("-n", c.netns, "link", "set", c.iface, "down")
	select {
	case <-c.done:
	case <-time.After(3 * time.Second):
	}
	c.h.Close()
}

// tlsRecords walks b as a sequence of TLS records and returns how many
// handshake (22) and application data (23) records it holds, and whether
// the whole stream parsed as records.
func tlsRecords(b []byte) (handshake, appData int, ok bool) {
	for len(b) >= 5 {
		typ, major := b[0], b[1]
		n := int(b[3])<<8 | int(b[4])
		if major != 3 || typ < 20 || typ > 24 || len(b) < 5+n {
			return handshake, appData, false
		}
		switch typ {
		case 22:
			handshake++
		case 23:
			appData++
		}
		b = b[5+n:]
	}
	return handshake, appData, len(b) == 0
}

// TestNetnsMTLSWire: with mTLS between the pods the marker in a request
// body never crosses the veth and the bytes there are TLS records; with a
// plaintext cluster the same request shows the marker on the wire.
func TestNetnsMTLSWire(t *testing.T) {
	requireNetns(t)
	for _, tc := range []struct {
		name       string
		mtls       bool
		wantMarker bool
	}{
		{"mtls", true, false},
		{"plaintext", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := newNSPair(t)
			startNSBackend(t, p.b)
			serverAddr := fmt.Sprintf("%s:%d", p.bIP, nsServerPort)
			backendAddr := fmt.Sprintf("127.0.0.1:%d", nsBackendPort)
			inbound, upstreamTLS := plainChain("backend"), ""
			var args []string
			if tc.mtls {
				inbound, upstreamTLS = serverChain(mtlsClientID, "backend"), meshTLS(mtlsServerID, false)
				args = []string{"--ca-dir", filepath.Join(t.TempDir(), "ca")}
			}
			server := "static_resources:\n  listeners:\n" + listenerYAML("inbound", serverAddr, inbound) +
				"  clusters:\n" + staticCluster("backend", backendAddr, "")
			runNSProxy(t, p.b, server, []string{"SERVICE_ACCOUNT=server"}, args...)
			outAddr := fmt.Sprintf("127.0.0.1:%d", nsOutPort)
			client := "static_resources:\n  listeners:\n" + plainListener("outbound", outAddr, "server") +
				"  clusters:\n" + staticCluster("server", serverAddr, upstreamTLS)
			runNSProxy(t, p.a, client, []string{"SERVICE_ACCOUNT=client"}, args...)

			capture := startCapture(t, p.b, p.vethB, nsServerPort)
			c := nsClient(p.a)
			body := strings.Repeat(nsMarker+" ", 64)
			for i := range 5 {
				resp, err := c.Post("http://"+outAddr+"/upload", "text/plain", strings.NewReader(body))
				if err != nil {
					t.Fatalf("request %d through the proxies: %v", i, err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(got) != "backend got marker=true\n" {
					t.Fatalf("request %d: status %d body %q; want the backend to get the marker", i, resp.StatusCode, got)
				}
			}
			// The last segments are on the veth before the response reached
			// the client; a short pause lets the reader drain its queue.
			time.Sleep(200 * time.Millisecond)
			capture.stop()

			capture.mu.Lock()
			defer capture.mu.Unlock()
			if capture.readErr != nil && !errors.Is(capture.readErr, unix.ENETDOWN) && !strings.Contains(capture.readErr.Error(), "network is down") {
				t.Fatalf("capture read: %v", capture.readErr)
			}
			if len(capture.toPort) < 5*len(body) {
				t.Fatalf("captured %d payload bytes to port %d in %d TCP segments; want at least the %d request body bytes",
					len(capture.toPort), nsServerPort, capture.tcpSegments, 5*len(body))
			}
			onWire := bytes.Contains(capture.toPort, []byte(nsMarker)) || bytes.Contains(capture.fromPort, []byte(nsMarker))
			if onWire != tc.wantMarker {
				t.Fatalf("marker on the wire = %t, want %t (%d bytes to, %d bytes from port %d)",
					onWire, tc.wantMarker, len(capture.toPort), len(capture.fromPort), nsServerPort)
			}
			// Under mTLS, every byte each way is a TLS record: handshakes
			// then application data (five connections, so five handshakes).
			hs, app, ok := tlsRecords(capture.toPort)
			if tc.mtls && (!ok || hs < 5 || app < 5) {
				t.Fatalf("client->server bytes: TLS records parsed=%t handshake=%d application_data=%d; want all TLS", ok, hs, app)
			}
			if !tc.mtls && ok {
				t.Fatalf("plaintext cluster: the bytes to port %d parsed as TLS records", nsServerPort)
			}
			t.Logf("%s: %d TCP segments, %d bytes to and %d from port %d, TLS handshake/app records to server %d/%d, marker on wire %t",
				tc.name, capture.tcpSegments, len(capture.toPort), len(capture.fromPort), nsServerPort, hs, app, onWire)
		})
	}
}
