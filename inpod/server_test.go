package inpod

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshlet/meshlet/inpod/zdspb"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The tests in this file need no privilege: the "pod" is the test's own
// network namespace (no setns needed) and nothing is captured, so the
// listeners are reached directly. netns_linux_test.go covers real pod
// namespaces with iptables and nftables.

// recorder is a Handler that greets each connection with what it was
// called for, then echoes until the client closes.
type recorder struct {
	mu    sync.Mutex
	calls []string
}

func (r *recorder) record(s string) {
	r.mu.Lock()
	r.calls = append(r.calls, s)
	r.mu.Unlock()
}

func (r *recorder) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

func (r *recorder) greetEcho(c *net.TCPConn, s string) {
	defer c.Close()
	r.record(s)
	_, _ = io.WriteString(c, s+"\n")
	_, _ = io.Copy(c, c)
}

func (r *recorder) Outbound(p *Pod, c *net.TCPConn, dst netip.AddrPort) {
	r.greetEcho(c, "outbound "+p.UID+" "+dst.String())
}

func (r *recorder) Inbound(p *Pod, c *net.TCPConn, dst netip.AddrPort) {
	r.greetEcho(c, "inbound "+p.UID+" "+dst.String())
}

func (r *recorder) HBONE(p *Pod, c *net.TCPConn) {
	r.greetEcho(c, "hbone "+p.UID+" "+p.Info.Namespace+"/"+p.Info.Name+" sa="+p.Info.ServiceAccount)
}

func (r *recorder) PodRemoved(p *Pod) { r.record("removed " + p.UID) }

// freePorts returns n TCP ports free on every local address right now.
func freePorts(t *testing.T, n int) []uint16 {
	t.Helper()
	var out []uint16
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", ":0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, uint16(ln.Addr().(*net.TCPAddr).Port))
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

type fixture struct {
	srv   *Server
	h     *recorder
	path  string
	ports Ports
}

func newFixture(t *testing.T, drain time.Duration) *fixture {
	t.Helper()
	p := freePorts(t, 3)
	f := &fixture{h: &recorder{}, path: filepath.Join(t.TempDir(), "ztunnel.sock"),
		ports: Ports{Outbound: p[0], Inbound: p[1], HBONE: p[2]}}
	var err error
	f.srv, err = New(Options{SocketPath: f.path, Handler: f.h, Ports: f.ports, Capture: "none",
		DrainTimeout: drain, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.srv.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := f.srv.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return f
}

func (f *fixture) dial(t *testing.T) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl, err := Dial(ctx, f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// ownNetns opens the test's own network namespace, standing in for a pod's.
func ownNetns(t *testing.T) *os.File {
	t.Helper()
	// thread-self, not self: /proc/self is the main thread's view, and the
	// main thread may be one that a netns goroutine left wedged in a pod's
	// namespace (the runtime cannot end the main thread).
	f, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no /proc/thread-self/ns/net: %v", err)
		}
		t.Skipf("no /proc/thread-self/ns/net: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// hello connects to a pod listener and returns the handler's greeting, or
// what went wrong.
func hello(port uint16) (string, net.Conn) {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), 2*time.Second)
	if err != nil {
		return "dial: " + err.Error(), nil
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	_ = c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return "read: " + err.Error(), nil
	}
	return strings.TrimSpace(line), c
}

func refused(port uint16) bool {
	c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), 2*time.Second)
	if err == nil {
		c.Close()
		return false
	}
	return errors.Is(err, syscall.ECONNREFUSED)
}

var info = WorkloadInfo{Name: "app-1", Namespace: "default", ServiceAccount: "app"}

// TestAddServesPod: an added pod gets its listeners in its netns; HBONE
// connections reach the handler with the pod's identity; a connection
// dialed straight at the proxy's own ports (not redirected) is closed
// instead of looping back; deleting the pod closes its listeners.
func TestAddServesPod(t *testing.T) {
	f := newFixture(t, time.Second)
	cl := f.dial(t)
	if cl.Version != zdspb.Version_V1 {
		t.Fatalf("hello version %v", cl.Version)
	}
	if err := cl.Add("uid-1", info, ownNetns(t)); err != nil {
		t.Fatalf("add: %v", err)
	}
	pods := f.srv.Pods()
	if len(pods) != 1 || pods[0].UID != "uid-1" || pods[0].Info != info || len(pods[0].Listeners) < 3 {
		t.Fatalf("pods after add: %+v", pods)
	}

	got, c := hello(f.ports.HBONE)
	if want := "hbone uid-1 default/app-1 sa=app"; got != want {
		t.Fatalf("hbone listener: got %q, want %q", got, want)
	}
	c.Close()
	for _, port := range []uint16{f.ports.Inbound, f.ports.Outbound} {
		if got, c := hello(port); !strings.HasPrefix(got, "read: ") {
			c.Close()
			t.Errorf("direct connection to own port %d: got %q, want it closed", port, got)
		}
	}

	if err := cl.Del("uid-1"); err != nil {
		t.Fatalf("del: %v", err)
	}
	for _, port := range []uint16{f.ports.HBONE, f.ports.Inbound, f.ports.Outbound} {
		if !refused(port) {
			t.Errorf("port %d still accepting after del", port)
		}
	}
	if pods := f.srv.Pods(); len(pods) != 0 {
		t.Fatalf("pods after del: %+v", pods)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !contains(f.h.Calls(), "removed uid-1") {
		if time.Now().After(deadline) {
			t.Fatalf("PodRemoved not called: %q", f.h.Calls())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestRequestErrors: malformed or out-of-order requests are refused with a
// reason and the session goes on.
func TestRequestErrors(t *testing.T) {
	f := newFixture(t, time.Second)
	cl := f.dial(t)
	regular, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	add := func(uid string) *zdspb.WorkloadRequest {
		return &zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_Add{Add: &zdspb.AddWorkload{Uid: uid}}}
	}
	for _, tc := range []struct {
		name  string
		req   *zdspb.WorkloadRequest
		files []*os.File
		want  string // "" means accepted
	}{
		{"add without netns", add("u1"), nil, "want 1 netns descriptor, got 0"},
		{"add with a file that is no netns", add("u1"), []*os.File{regular}, "not a namespace"},
		{"add with two descriptors", add("u1"), []*os.File{regular, regular}, "got 2"},
		{"add without uid", add(""), []*os.File{regular}, "empty uid"},
		{"keep unknown pod", &zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_Keep{Keep: &zdspb.KeepWorkload{Uid: "nope"}}}, nil, "keep nope: no such pod"},
		{"del unknown pod", &zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_Del{Del: &zdspb.DelWorkload{Uid: "nope"}}}, nil, ""},
		{"del with a descriptor", &zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_Del{Del: &zdspb.DelWorkload{Uid: "nope"}}}, []*os.File{regular}, "unexpected file descriptors"},
		{"snapshot", &zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_SnapshotSent{SnapshotSent: &zdspb.SnapshotSent{}}}, nil, ""},
		{"snapshot twice", &zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_SnapshotSent{SnapshotSent: &zdspb.SnapshotSent{}}}, nil, "snapshot sent twice"},
		{"keep after snapshot", &zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_Keep{Keep: &zdspb.KeepWorkload{Uid: "x"}}}, nil, "only valid before the snapshot"},
	} {
		err := cl.do(tc.req, tc.files...)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != "" && (!IsRefused(err) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: got %v, want a refusal containing %q", tc.name, err, tc.want)
		}
	}
	if pods := f.srv.Pods(); len(pods) != 0 {
		t.Fatalf("pods after refused adds: %+v", pods)
	}
	// Raw packets: garbage that is no WorkloadRequest, and a payload this
	// protocol version does not know (field 4, ztunnel's retired
	// NoSnapshotPresent), are refused too.
	for _, tc := range []struct {
		raw  []byte
		want string
	}{
		{[]byte{0xff, 0xff, 0xff}, "decode"},
		{[]byte{0x22, 0x00}, "empty or unknown request"},
	} {
		if _, _, err := cl.c.WriteMsgUnix(tc.raw, nil, nil); err != nil {
			t.Fatal(err)
		}
		var resp zdspb.WorkloadResponse
		if _, err := recvMsg(cl.c, &resp); err != nil || !strings.Contains(resp.GetAck().GetError(), tc.want) {
			t.Errorf("raw %x: ack %v, err %v; want %q", tc.raw, resp.GetAck(), err, tc.want)
		}
	}
}

// TestSnapshotReconcile: pods outlive the agent's connection; after a
// reconnect the snapshot keeps what was re-added or kept and drops the rest.
func TestSnapshotReconcile(t *testing.T) {
	for _, tc := range []struct {
		name     string
		resend   func(cl *Client, ns *os.File) error
		wantKept bool
	}{
		{"nothing re-sent", func(*Client, *os.File) error { return nil }, false},
		{"kept", func(cl *Client, _ *os.File) error { return cl.Keep("uid-1") }, true},
		{"re-added", func(cl *Client, ns *os.File) error { return cl.Add("uid-1", info, ns) }, true},
		{"re-added then deleted", func(cl *Client, ns *os.File) error {
			if err := cl.Add("uid-1", info, ns); err != nil {
				return err
			}
			return cl.Del("uid-1")
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, time.Second)
			ns := ownNetns(t)
			cl := f.dial(t)
			if err := cl.Add("uid-1", info, ns); err != nil {
				t.Fatal(err)
			}
			// A connection open across the agent's reconnect.
			got, open := hello(f.ports.HBONE)
			if !strings.HasPrefix(got, "hbone uid-1") {
				t.Fatalf("hbone: %q", got)
			}
			defer open.Close()
			cl.Close()
			time.Sleep(50 * time.Millisecond)
			if got, c := hello(f.ports.HBONE); !strings.HasPrefix(got, "hbone uid-1") {
				t.Fatalf("pod not served after the agent went away: %q", got)
			} else {
				c.Close()
			}

			cl2 := f.dial(t)
			if err := tc.resend(cl2, ns); err != nil {
				t.Fatal(err)
			}
			if err := cl2.SnapshotSent(); err != nil {
				t.Fatal(err)
			}
			if kept := len(f.srv.Pods()) == 1; kept != tc.wantKept {
				t.Fatalf("pod kept = %v, want %v", kept, tc.wantKept)
			}
			if tc.wantKept {
				// Same netns re-added: the pod was not restarted, the
				// open connection still echoes.
				if _, err := io.WriteString(open, "ping\n"); err != nil {
					t.Fatal(err)
				}
				_ = open.SetReadDeadline(time.Now().Add(2 * time.Second))
				line, err := bufio.NewReader(open).ReadString('\n')
				if err != nil || line != "ping\n" {
					t.Fatalf("open connection after re-add: %q, %v", line, err)
				}
			} else if !refused(f.ports.HBONE) {
				t.Fatal("dropped pod still accepting")
			}
		})
	}
}

// TestDeleteDrains: a deleted pod's open connections keep working until
// they end, or until the drain timeout closes them; new ones are refused.
func TestDeleteDrains(t *testing.T) {
	for _, tc := range []struct {
		name      string
		drain     time.Duration
		wantAlive bool
	}{
		{"within drain time", 5 * time.Second, true},
		{"drain time over", 50 * time.Millisecond, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tc.drain)
			cl := f.dial(t)
			if err := cl.Add("uid-1", info, ownNetns(t)); err != nil {
				t.Fatal(err)
			}
			_, open := hello(f.ports.HBONE)
			if open == nil {
				t.Fatal("no connection")
			}
			defer open.Close()
			if err := cl.Del("uid-1"); err != nil {
				t.Fatal(err)
			}
			if !refused(f.ports.HBONE) {
				t.Fatal("new connections still accepted after del")
			}
			time.Sleep(200 * time.Millisecond)
			_, _ = io.WriteString(open, "ping\n")
			_ = open.SetReadDeadline(time.Now().Add(2 * time.Second))
			line, err := bufio.NewReader(open).ReadString('\n')
			if alive := err == nil && line == "ping\n"; alive != tc.wantAlive {
				t.Fatalf("open connection alive = %v (%q, %v), want %v", alive, line, err, tc.wantAlive)
			}
		})
	}
}

// TestConnectMode: the proxy dials an agent that serves the socket (as
// ztunnel dials istio-cni), and dials again when the agent drops it; the
// pods stay served in between.
func TestConnectMode(t *testing.T) {
	p := freePorts(t, 3)
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	h := &recorder{}
	srv, err := New(Options{SocketPath: path, Handler: h, Ports: Ports{Outbound: p[0], Inbound: p[1], HBONE: p[2]},
		Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); srv.Connect(ctx) }()
	defer func() {
		cancel()
		<-done
		_ = srv.Close(context.Background())
	}()
	accept := func() *Client {
		_ = ln.SetDeadline(time.Now().Add(5 * time.Second))
		c, err := ln.AcceptUnix()
		if err != nil {
			t.Fatal(err)
		}
		cl, err := NewClient(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		return cl
	}
	cl := accept()
	if err := cl.Add("uid-1", info, ownNetns(t)); err != nil {
		t.Fatal(err)
	}
	if got, c := hello(p[2]); !strings.HasPrefix(got, "hbone uid-1") {
		t.Fatalf("hbone: %q", got)
	} else {
		c.Close()
	}
	cl.Close()
	cl = accept() // the proxy reconnects
	defer cl.Close()
	if err := cl.Keep("uid-1"); err != nil {
		t.Fatalf("keep after reconnect: %v", err)
	}
	if err := cl.SnapshotSent(); err != nil {
		t.Fatal(err)
	}
	if n := len(srv.Pods()); n != 1 {
		t.Fatalf("%d pods after reconnect, want 1", n)
	}
}

// TestForwarder: the fallback handler connects to the original destination
// from the pod's netns and copies both ways, half-close included.
func TestForwarder(t *testing.T) {
	backend, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer backend.Close()
	go func() {
		c, err := backend.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c) // until the client's half-close
		fmt.Fprintf(c, "got %q from %s", b, c.RemoteAddr())
	}()
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	pod := &Pod{UID: "u", netns: ownNetns(t)}
	fw := &Forwarder{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := front.Accept()
		if err != nil {
			return
		}
		fw.Outbound(pod, c.(*net.TCPConn), backend.Addr().(*net.TCPAddr).AddrPort())
	}()
	c, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = io.WriteString(c, "hi")
	_ = c.(*net.TCPConn).CloseWrite()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || !strings.HasPrefix(string(b), `got "hi" from 127.0.0.1:`) {
		t.Fatalf("through the forwarder: %q, %v", b, err)
	}
	<-done
}
