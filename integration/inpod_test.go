package integration

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshlet/meshlet/capture"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/inpod"
	"github.com/meshlet/meshlet/xds/istiopb/workloadpb"
	"github.com/meshlet/meshlet/xds/workloadtest"
)

// inpodBootstrap is a node proxy's: no listeners of its own, every pod is
// served in-pod.
const inpodBootstrap = `node: {id: ztunnel~10.77.0.1~ztunnel.istio-system~istio-system.svc.cluster.local, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 15000}}}
`

// inpodNode is a "node": a netns with a bridge, pods (netns) attached to it
// by veth pairs, all on SUBNET.0/24 (the node is .1).
type inpodNode struct {
	t      *testing.T
	name   string
	tag    string // random suffix shared by this node's links
	subnet string // e.g. "10.77.0"
	scope  capture.Scope
}

func newInpodNode(t *testing.T, subnet string) *inpodNode {
	t.Helper()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	n := &inpodNode{t: t, tag: hex.EncodeToString(b)[:6], subnet: subnet}
	n.name = "mino" + n.tag
	run(t, "ip", "netns", "add", n.name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n.name).Run() })
	n.scope = capture.NetNSPath(filepath.Join("/var/run/netns", n.name))
	run(t, "ip", "-n", n.name, "link", "set", "lo", "up")
	run(t, "ip", "-n", n.name, "link", "add", "br0", "type", "bridge")
	run(t, "ip", "-n", n.name, "addr", "add", subnet+".1/24", "dev", "br0")
	run(t, "ip", "-n", n.name, "link", "set", "br0", "up")
	return n
}

// inpodPod is one pod netns with its address.
type inpodPod struct {
	name    string
	ip      string
	scope   capture.Scope
	fd      *os.File
	vethOut string // the veth's end on the node
}

// addPod creates pod "letter" at SUBNET.host behind a veth on the bridge;
// its veth's node side is vethOut.
func (n *inpodNode) addPod(letter string, host int) *inpodPod {
	t := n.t
	t.Helper()
	p := &inpodPod{name: "mip" + letter + n.tag, ip: n.subnet + "." + strconv.Itoa(host)}
	run(t, "ip", "netns", "add", p.name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", p.name).Run() })
	run(t, "ip", "-n", p.name, "link", "set", "lo", "up")
	in, out := "miv"+letter+n.tag+"p", "miv"+letter+n.tag+"n"
	p.vethOut = out
	run(t, "ip", "link", "add", in, "netns", p.name, "type", "veth", "peer", "name", out, "netns", n.name)
	run(t, "ip", "-n", n.name, "link", "set", out, "master", "br0", "up")
	run(t, "ip", "-n", p.name, "addr", "add", p.ip+"/24", "dev", in)
	run(t, "ip", "-n", p.name, "link", "set", in, "up")
	run(t, "ip", "-n", p.name, "route", "add", "default", "via", n.subnet+".1")
	path := filepath.Join("/var/run/netns", p.name)
	p.scope = capture.NetNSPath(path)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	p.fd = f
	return p
}

// serve answers each connection with "saw REMOTE", then echoes.
func (p *inpodPod) serve(t *testing.T, port string) {
	t.Helper()
	var ln net.Listener
	if err := p.scope.Do(func() (err error) { ln, err = net.Listen("tcp", net.JoinHostPort(p.ip, port)); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = c.Write([]byte("saw " + c.RemoteAddr().String() + "\n"))
				buf := make([]byte, 256)
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

// call dials addr from inside the pod as an unmodified client would and
// returns what the server saw and the client's own address.
func (p *inpodPod) call(t *testing.T, addr string) (saw, local string) {
	t.Helper()
	var c net.Conn
	err := p.scope.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 3*time.Second)
		return err
	})
	if err != nil {
		return "dial: " + err.Error(), ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "read: " + err.Error(), c.LocalAddr().String()
	}
	return strings.TrimPrefix(strings.TrimSpace(line), "saw "), c.LocalAddr().String()
}

func (p *inpodPod) rules(t *testing.T) string {
	t.Helper()
	out, _ := exec.Command("ip", "netns", "exec", p.name, "sh", "-c", "iptables-save; ip6tables-save; nft list ruleset").CombinedOutput()
	return string(out)
}

// TestInpodNodeMode runs the real binary in a node netns in node mode with
// the test acting as the node agent (istio-cni) over the in-pod socket.
// Pod B is added first and serves; pod A is added while B serves and its
// unmodified client is captured from the next connection on (the server
// sees the proxy's socket in A, not the client's); an uncaptured pod C
// reaches captured B (delivered by the proxy inside B from C's address, as
// ztunnel does). Deleting A closes its listeners and leaves no rule in its
// netns once its connections drained; on SIGTERM B's go too.
func TestInpodNodeMode(t *testing.T) {
	requireCapturePriv(t)
	n := newInpodNode(t, "10.77.0")
	a, b, c := n.addPod("a", 2), n.addPod("b", 3), n.addPod("c", 4)
	b.serve(t, "80")
	c.serve(t, "80")

	boot := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(boot, []byte(inpodBootstrap), 0o600); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "ztunnel.sock")
	px := startNetnsProxy(t, exec.Command("ip", "netns", "exec", n.name, binPath, "run", "--bootstrap", boot,
		"--mode", "node", "--inpod-socket", sock, "--inpod-forward", "--inpod-capture", "iptables",
		"--inpod-drain-time", "1s", "--metrics", "", "--drain-time", "1s"), nil, "in-pod mode started")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	agent, err := inpod.Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer agent.Close()

	// Before anything is added: direct.
	if saw, local := a.call(t, c.ip+":80"); saw != local {
		t.Fatalf("A -> C before add: server saw %q, client was %s", saw, local)
	}
	if err := agent.Add("uid-b", inpod.WorkloadInfo{Name: "b", Namespace: "default", ServiceAccount: "b"}, b.fd); err != nil {
		t.Fatalf("add B: %v", err)
	}
	// Uncaptured C reaches captured B; B's inbound capture hands it to the
	// proxy, which delivers it from inside B with C's address: the server
	// sees C's IP, on the proxy's socket (not C's own port).
	if saw, local := c.call(t, b.ip+":80"); !strings.HasPrefix(saw, c.ip+":") || saw == local {
		t.Fatalf("C -> B with B captured: server saw %q, client was %s; want C's IP on the proxy's socket", saw, local)
	}
	if saw, local := a.call(t, c.ip+":80"); saw != local {
		t.Fatalf("A -> C before A is added: server saw %q, client was %s", saw, local)
	}

	// A is added while B serves: A's next connections are captured.
	if err := agent.Add("uid-a", inpod.WorkloadInfo{Name: "a", Namespace: "default", ServiceAccount: "a"}, a.fd); err != nil {
		t.Fatalf("add A: %v", err)
	}
	if !strings.Contains(a.rules(t), "MESHLET") {
		t.Fatal("no MESHLET rules in A's netns after add")
	}
	if saw, local := a.call(t, c.ip+":80"); !strings.HasPrefix(saw, a.ip+":") || saw == local {
		t.Fatalf("A -> C with A captured: server saw %q, client was %s; want the proxy's socket in A", saw, local)
	}
	// Out of A's proxy (from A's netns), into B's proxy, delivered from A's IP.
	if saw, local := a.call(t, b.ip+":80"); !strings.HasPrefix(saw, a.ip+":") || saw == local {
		t.Fatalf("A -> B, both captured: server saw %q, client was %s", saw, local)
	}

	// Deleting A: listeners closed, no rules left, direct again.
	if err := agent.Del("uid-a"); err != nil {
		t.Fatalf("del A: %v", err)
	}
	waitNoMeshletRules(t, a)
	if saw, _ := a.call(t, "127.0.0.1:15001"); !strings.Contains(saw, "refused") {
		t.Fatalf("A's outbound listener after del: %q", saw)
	}
	if saw, local := a.call(t, c.ip+":80"); saw != local {
		t.Fatalf("A -> C after del: server saw %q, client was %s; want direct", saw, local)
	}
	// B is untouched.
	if saw, local := c.call(t, b.ip+":80"); !strings.HasPrefix(saw, c.ip+":") || saw == local {
		t.Fatalf("C -> B after A's del: server saw %q, client was %s", saw, local)
	}

	px.stop(t)
	if r := b.rules(t); strings.Contains(r, "MESHLET") {
		t.Fatalf("rules left in B after exit:\n%s", r)
	}
	if saw, local := c.call(t, b.ip+":80"); saw != local {
		t.Fatalf("C -> B after exit: server saw %q, client was %s; want direct", saw, local)
	}
}

// waitNoMeshletRules waits (bounded) until p's netns has none of our rules:
// the return path of original-source delivery stays until the pod's
// connections drained.
func waitNoMeshletRules(t *testing.T, p *inpodPod) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := p.rules(t)
		if !strings.Contains(r, "MESHLET") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("rules left in %s after del:\n%s", p.name, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// exchange dials addr from inside the pod, sends msg and returns the
// server's greeting and echo (or what went wrong).
func (p *inpodPod) exchange(t *testing.T, addr, msg string) (saw, echo string) {
	t.Helper()
	var c net.Conn
	err := p.scope.Do(func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	if err != nil {
		return "dial: " + err.Error(), ""
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "read: " + err.Error(), ""
	}
	if _, err := c.Write([]byte(msg + "\n")); err != nil {
		return strings.TrimSpace(line), "write: " + err.Error()
	}
	back, err := r.ReadString('\n')
	if err != nil {
		return strings.TrimSpace(line), "read: " + err.Error()
	}
	return strings.TrimPrefix(strings.TrimSpace(line), "saw "), strings.TrimSpace(back)
}

// forwardInto listens on addr inside the netns of scope and connects each
// connection to target from the test's own netns: how a node netns
// reaches the test's control plane on loopback.
func forwardInto(t *testing.T, scope capture.Scope, addr, target string) {
	t.Helper()
	var ln net.Listener
	if err := scope.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			track(c, true)
			track(up, true)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { track(c, false); track(up, false); c.Close(); up.Close() }()
				done := make(chan struct{})
				go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); close(done) }()
				_, _ = io.Copy(c, up)
				<-done
			}()
		}
	}()
}

// startNodeProxy runs the binary in node mode in n's netns against the
// Workload API server at xdsAddr, with workload certificates from caDir,
// and waits until /ready answers 200 (workloads received).
func startNodeProxy(t *testing.T, n *inpodNode, nodeName, sock, caDir, xdsAddr string) (*exec.Cmd, *lockedBuf, chan error) {
	t.Helper()
	forwardInto(t, n.scope, "127.0.0.1:15010", xdsAddr)
	boot := filepath.Join(t.TempDir(), "bootstrap.yaml")
	bs := strings.Replace(inpodBootstrap, "ztunnel~10.77.0.1~ztunnel.", "ztunnel~"+n.subnet+".1~ztunnel-"+nodeName+".", 1)
	if err := os.WriteFile(boot, []byte(bs), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &lockedBuf{}
	cmd := exec.Command("ip", "netns", "exec", n.name, binPath, "run", "--bootstrap", boot,
		"--mode", "node", "--inpod-socket", sock, "--inpod-capture", "iptables", "--node-name", nodeName,
		"--ca-dir", caDir, "--inpod-drain-time", "1s", "--metrics", "", "--drain-time", "1s", "--log-level", "debug")
	cmd.Env = append(os.Environ(), "XDS_ADDRESS=127.0.0.1:15010")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("ztunnel %s output:\n%s", nodeName, out.String())
		}
	})
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = n.scope.Do(func() (err error) { c, err = (&net.Dialer{}).DialContext(ctx, network, addr); return err })
		return c, err
	}}}
	defer hc.CloseIdleConnections()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := hc.Get("http://127.0.0.1:15000/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(out.String(), "in-pod mode started") {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("ztunnel %s not ready after 20s:\n%s", nodeName, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return cmd, out, done
}

// TestInpodAmbientHBONE is the node-mode case: two nodes (netns
// with their own node proxy binary, linked by an underlay veth), pods A and
// B on node 1 and C on node 2 added over each node's in-pod socket,
// workloads and a DENY policy pushed over delta xDS with our protos. A's
// unmodified client reaches B (same node) and C (other node, by pod IP and
// by service VIP) through HBONE: on the veths only TLS records cross,
// never the payload, and the destination server sees A's own IP (the
// proxy delivers from the source address). The DENY on B's identity stops
// B -> C; D, a pod of node 2 that is not captured, still reaches captured
// C. E shares A's service account but never A's tunnels.
func TestInpodAmbientHBONE(t *testing.T) {
	requireCapturePriv(t)
	n1, n2 := newInpodNode(t, "10.77.1"), newInpodNode(t, "10.77.2")
	// Underlay between the nodes, routing each node's pod subnet.
	u1, u2 := "miu"+n1.tag+"a", "miu"+n1.tag+"b"
	run(t, "ip", "link", "add", u1, "netns", n1.name, "type", "veth", "peer", "name", u2, "netns", n2.name)
	for _, c := range []struct {
		n          *inpodNode
		dev, ip    string
		peerSubnet string
		via        string
	}{{n1, u1, "10.78.0.1/24", "10.77.2.0/24", "10.78.0.2"}, {n2, u2, "10.78.0.2/24", "10.77.1.0/24", "10.78.0.1"}} {
		run(t, "ip", "-n", c.n.name, "addr", "add", c.ip, "dev", c.dev)
		run(t, "ip", "-n", c.n.name, "link", "set", c.dev, "up")
		run(t, "ip", "-n", c.n.name, "route", "add", c.peerSubnet, "via", c.via)
		run(t, "ip", "netns", "exec", c.n.name, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	}
	a, b, e := n1.addPod("a", 2), n1.addPod("b", 3), n1.addPod("e", 5)
	c, d := n2.addPod("c", 3), n2.addPod("d", 4)
	c.serve(t, "80")
	b.serve(t, "80")

	cp, err := workloadtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	csvc := workloadtest.Service("csvc", "default", "10.96.0.10", 8080, 80)
	wc := workloadtest.Workload("c", "default", "c", "node2", c.ip, true)
	wc.Services = map[string]*workloadpb.PortList{"default/" + csvc.GetHostname(): {}}
	for _, err := range []error{
		cp.SetWorkloads(
			workloadtest.Workload("a", "default", "a", "node1", a.ip, true),
			workloadtest.Workload("b", "default", "b", "node1", b.ip, true),
			// E shares A's service account: one identity, two pods.
			workloadtest.Workload("e", "default", "a", "node1", e.ip, true),
			wc,
		),
		cp.SetServices(csvc),
		cp.SetPolicies(workloadtest.DenyPrincipal("deny-b", "default", "cluster.local/ns/default/sa/b")),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	// One mesh CA for both nodes, created before either starts.
	caDir := t.TempDir()
	if _, err := identity.LoadOrCreateCA(caDir); err != nil {
		t.Fatal(err)
	}
	sock1, sock2 := filepath.Join(t.TempDir(), "n1.sock"), filepath.Join(t.TempDir(), "n2.sock")
	startNodeProxy(t, n1, "node1", sock1, caDir, cp.Addr)
	startNodeProxy(t, n2, "node2", sock2, caDir, cp.Addr)

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	agent1, err := inpod.Dial(ctx, sock1)
	if err != nil {
		t.Fatal(err)
	}
	defer agent1.Close()
	agent2, err := inpod.Dial(ctx, sock2)
	if err != nil {
		t.Fatal(err)
	}
	defer agent2.Close()
	for _, add := range []struct {
		agent *inpod.Client
		uid   string
		p     *inpodPod
	}{{agent2, "k8s-uid-c", c}, {agent1, "k8s-uid-b", b}, {agent1, "k8s-uid-a", a}, {agent1, "k8s-uid-e", e}} {
		if err := add.agent.Add(add.uid, inpod.WorkloadInfo{Name: add.uid, Namespace: "default", ServiceAccount: add.uid}, add.p.fd); err != nil {
			t.Fatalf("add %s: %v", add.uid, err)
		}
	}

	const marker = "meshlet-inpod-marker-5d1e"
	// Captures run for the whole test: stopping one takes its link down.
	sameNode := startCapture(t, n1.name, a.vethOut, 15008)
	crossNode := startCapture(t, n1.name, u1, 15008)
	wire := func(w *wireCapture) (to, from string) {
		w.mu.Lock()
		defer w.mu.Unlock()
		return string(w.toPort), string(w.fromPort)
	}
	for _, tc := range []struct {
		name    string
		from    *inpodPod
		to      string
		w       *wireCapture
		wantSaw string // prefix of the address the server saw
	}{
		// Delivered inside the destination pod from the source pod's IP.
		{"same node over HBONE", a, b.ip + ":80", sameNode, a.ip + ":"},
		{"cross node by pod IP over HBONE", a, c.ip + ":80", crossNode, a.ip + ":"},
		{"cross node by service VIP over HBONE", a, "10.96.0.10:8080", crossNode, a.ip + ":"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, _ := wire(tc.w)
			saw, echo := tc.from.exchange(t, tc.to, marker)
			if !strings.HasPrefix(saw, tc.wantSaw) || echo != marker {
				t.Fatalf("server saw %q, echo %q; want %s* and the marker back", saw, echo, tc.wantSaw)
			}
			deadline := time.Now().Add(2 * time.Second)
			for {
				to, from := wire(tc.w)
				if strings.Contains(to+from, marker) {
					t.Fatalf("the payload crossed %s in plaintext", tc.w.iface)
				}
				if len(to) > len(before) {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("nothing sent to :15008 on %s", tc.w.iface)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	for _, w := range []*wireCapture{sameNode, crossNode} {
		to, _ := wire(w)
		if hs, app, ok := tlsRecords([]byte(to)); !ok || hs == 0 || app == 0 {
			t.Errorf("to :15008 on %s: %d bytes, TLS records parse %v, %d handshake, %d application data; want TLS only",
				w.iface, len(to), ok, hs, app)
		}
	}

	t.Run("DENY on B's identity", func(t *testing.T) {
		if saw, echo := b.exchange(t, c.ip+":80", marker); echo == marker {
			t.Fatalf("B -> C answered (%q, %q) despite the DENY", saw, echo)
		}
		// A is not denied.
		if _, echo := a.exchange(t, c.ip+":80", marker); echo != marker {
			t.Fatalf("A -> C after B's refusal: %q", echo)
		}
		// The policy, not the path, refused B: withdrawn over xDS, B gets
		// through.
		if err := cp.RemovePolicies("default/deny-b"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			_, echo := b.exchange(t, c.ip+":80", marker)
			if echo == marker {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("B -> C still refused 5s after the DENY was withdrawn: %q", echo)
			}
			time.Sleep(50 * time.Millisecond)
		}
	})
	t.Run("uncaptured pod reaches a captured one", func(t *testing.T) {
		saw, echo := d.exchange(t, c.ip+":80", marker)
		if echo != marker || !strings.HasPrefix(saw, d.ip+":") {
			t.Fatalf("D -> C: server saw %q, echo %q; want delivery from D's IP", saw, echo)
		}
		// Through C's proxy: D's IP, but not D's own socket.
		if saw, local := d.call(t, c.ip+":80"); !strings.HasPrefix(saw, d.ip+":") || saw == local {
			t.Fatalf("D -> C: server saw %q, client was %s; want D's IP on C's proxy's socket", saw, local)
		}
	})
	// A and E share a service account, hence a certificate, but never a
	// tunnel: each pod's tunnels leave from its own netns with its own
	// address, which C's proxy delivers from.
	t.Run("pods sharing a service account do not share tunnels", func(t *testing.T) {
		for i, from := range []*inpodPod{a, e, a, e} {
			saw, echo := from.exchange(t, c.ip+":80", marker)
			if echo != marker || !strings.HasPrefix(saw, from.ip+":") {
				t.Fatalf("call %d from %s: server saw %q, echo %q; want %s", i, from.name, saw, echo, from.ip)
			}
		}
	})
}
