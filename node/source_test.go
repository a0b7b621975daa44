package node

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshlet/meshlet/hbone"
	"github.com/meshlet/meshlet/state"
)

// sourceRecorder is a PodDial that notes the InboundSource of each call.
type sourceRecorder struct {
	mu   sync.Mutex
	seen []string
}

func (r *sourceRecorder) dial(ctx context.Context, _ *state.Workload, addr netip.AddrPort) (net.Conn, error) {
	src, ok := InboundSource(ctx)
	r.mu.Lock()
	if ok {
		r.seen = append(r.seen, src.Addr().String())
	} else {
		r.seen = append(r.seen, "none")
	}
	r.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr.String())
}

func (r *sourceRecorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.seen) == 0 {
		return ""
	}
	return r.seen[len(r.seen)-1]
}

// dialerFrom binds the client side to ip, as a tunnel or client leaving
// from that pod would.
func dialerFrom(ip string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	return d.DialContext
}

// TestInboundSourceReachesPodDial: the hook that delivers to the pod
// learns who the client was (in-pod mode binds it, so the pod sees its
// real client): the tunnel's peer address over HBONE, at L4 and when
// requests are judged at L7, and the client's own address in plaintext.
func TestInboundSourceReachesPodDial(t *testing.T) {
	m := newMesh(t)
	a := wl("a", "127.0.0.51", "n1", state.TunnelHBONE)
	b := wl("b", "127.0.0.52", "n2", state.TunnelHBONE)
	bAddr := httpBackend(t, "127.0.0.52", "b")
	m.set([]*state.Workload{a, b}, nil, nil)

	n2 := m.proxy("n2")
	rec := &sourceRecorder{}
	n2.PodDial = rec.dial
	m.serveInbound(n2, b)

	for _, tc := range []struct {
		name     string
		policies []*state.Authorization
	}{{"hbone l4", nil}, {"hbone l7", l7Policies()}} {
		t.Run(tc.name, func(t *testing.T) {
			m.set([]*state.Workload{a, b}, nil, tc.policies)
			n1 := m.proxy("n1")
			n1.HBONE = &hbone.Client{SourceFor: n1.hboneSource, DialContext: dialerFrom("127.0.0.51")}
			t.Cleanup(func() { n1.HBONE.Close() })
			via, _ := capture(t, n1, a, bAddr)
			if got := rawRequests(t, via, "GET /x"); len(got) != 1 || got[0] != "200 b GET /x HTTP/1.1" {
				t.Fatalf("a -> b: %q", got)
			}
			if got := rec.last(); got != "127.0.0.51" {
				t.Fatalf("PodDial saw source %q, want a's address 127.0.0.51", got)
			}
		})
	}

	t.Run("plaintext", func(t *testing.T) {
		m.set([]*state.Workload{a, b}, nil, nil)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = n2.HandleInboundPlaintext(context.Background(), c, bAddr)
		}()
		t.Cleanup(func() { ln.Close(); <-done })
		c, err := dialerFrom("127.0.0.53")(context.Background(), "tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1)
		if _, err := c.Read(buf); err != nil {
			t.Fatalf("no answer: %v", err)
		}
		if got := rec.last(); got != "127.0.0.53" {
			t.Fatalf("PodDial saw source %q, want the client's 127.0.0.53", got)
		}
	})
}

// TestHBONEPoolPerSourceWorkload: two workloads sharing a service account
// (one identity, one certificate) never share a tunnel: each tunnel
// carries its own pod's address.
func TestHBONEPoolPerSourceWorkload(t *testing.T) {
	m := newMesh(t)
	a1 := wl("a1", "127.0.0.61", "n1", state.TunnelHBONE)
	a2 := wl("a2", "127.0.0.62", "n1", state.TunnelHBONE)
	a1.ServiceAccount, a2.ServiceAccount = "shared", "shared"
	b := wl("b", "127.0.0.63", "n2", state.TunnelHBONE)
	bAddr := echo(t, "127.0.0.63", "b")
	m.set([]*state.Workload{a1, a2, b}, nil, nil)
	if a1.Identity() != a2.Identity() {
		t.Fatalf("identities differ: %s %s", a1.Identity(), a2.Identity())
	}

	n1, n2 := m.proxy("n1"), m.proxy("n2")
	rec := &sourceRecorder{}
	n2.PodDial = rec.dial
	m.serveInbound(n2, b)
	// Each workload's tunnels leave from its own address: in-pod mode
	// dials them from the source pod's netns.
	n1.HBONE = &hbone.Client{SourceFor: n1.hboneSource, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return dialerFrom(ctx.Value(testSrcKey{}).(string))(ctx, network, addr)
	}}
	t.Cleanup(func() { n1.HBONE.Close() })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for i, tc := range []struct {
		src  *state.Workload
		conn int // pooled connections after the call
	}{{a1, 1}, {a2, 2}, {a1, 2}, {a2, 2}} {
		ctx := context.WithValue(context.Background(), testSrcKey{}, tc.src.Addresses[0].String())
		errc := make(chan error, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				errc <- err
				return
			}
			errc <- n1.HandleOutbound(ctx, c, tc.src, bAddr)
		}()
		if got, err := roundTrip(t, ln.Addr().String(), "hi"); err != nil || got != "b:hi" {
			t.Fatalf("call %d from %s: %q %v", i, tc.src.UID, got, err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
		if got := rec.last(); got != tc.src.Addresses[0].String() {
			t.Errorf("call %d from %s arrived from %s", i, tc.src.UID, got)
		}
		if got := n1.HBONE.Conns(); got != tc.conn {
			t.Errorf("after call %d from %s: %d pooled tunnels, want %d", i, tc.src.UID, got, tc.conn)
		}
	}
	if h := n1.HBONE.Handshakes(); h != 2 {
		t.Errorf("%d handshakes, want 2 (one per source workload)", h)
	}
}

type testSrcKey struct{}
