package hbone

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshlet/meshlet/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	clientID = "spiffe://cluster.local/ns/default/sa/client"
	serverID = "spiffe://cluster.local/ns/default/sa/server"
)

// startEcho serves TCP echo with half-close: it echoes until the peer's
// FIN, then sends its own.
func startEcho(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	return ln.Addr().String()
}

type fixture struct {
	srv     *Server
	addr    string // HBONE endpoint
	ca      *testCA
	mu      sync.Mutex
	lastReq *Request
}

// startServer runs an HBONE server with serverID; tweak adjusts it before
// Serve.
func startServer(t testing.TB, tweak func(*Server)) *fixture {
	t.Helper()
	f := &fixture{ca: newTestCA(t, "mesh")}
	f.srv = &Server{Source: f.ca.source(t, serverID)}
	f.srv.Dial = func(ctx context.Context, r *Request) (net.Conn, error) {
		f.mu.Lock()
		f.lastReq = r
		f.mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, "tcp", r.Target.String())
	}
	if tweak != nil {
		tweak(f.srv)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- f.srv.Serve(ln) }()
	t.Cleanup(func() {
		f.srv.Close()
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return f
}

func (f *fixture) client(t testing.TB, id string) *Client {
	c := &Client{Source: f.ca.source(t, id)}
	t.Cleanup(func() { c.Close() })
	return c
}

func (f *fixture) key() Key { return Key{Src: clientID, Dst: serverID, Addr: f.addr} }

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestTunnelEchoAndMetadata(t *testing.T) {
	echo := startEcho(t)
	f := startServer(t, nil)
	c := f.client(t, clientID)
	tp := NewTraceParent()
	bag := Baggage{ClusterID: "Kubernetes", Namespace: "default", WorkloadType: "deployment", WorkloadName: "client", Service: "client", Revision: "v1"}
	conn, err := c.Dial(ctx(t), f.key(), echo, Meta{
		ForwardedFor: netip.MustParseAddr("10.1.2.3"),
		Baggage:      bag.String(),
		TraceParent:  tp,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msg := []byte("hello through the tunnel")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo = %q, want %q", got, msg)
	}

	f.mu.Lock()
	r := f.lastReq
	f.mu.Unlock()
	if r.Target.String() != echo {
		t.Errorf("target = %s, want %s", r.Target, echo)
	}
	if r.Peer.ID != clientID || r.Peer.TrustDomain != "cluster.local" {
		t.Errorf("peer = %s (%s), want %s", r.Peer.ID, r.Peer.TrustDomain, clientID)
	}
	if r.Meta.ForwardedFor != netip.MustParseAddr("10.1.2.3") {
		t.Errorf("forwarded for = %v", r.Meta.ForwardedFor)
	}
	if r.Meta.TraceParent != tp {
		t.Errorf("traceparent = %q, want %q", r.Meta.TraceParent, tp)
	}
	if ParseBaggage(r.Meta.Baggage) != bag {
		t.Errorf("baggage = %+v, want %+v", ParseBaggage(r.Meta.Baggage), bag)
	}
	if conn.RemoteAddr().String() != echo {
		t.Errorf("RemoteAddr = %s, want %s", conn.RemoteAddr(), echo)
	}
}

func TestTraceParentGeneratedWhenAbsent(t *testing.T) {
	echo := startEcho(t)
	f := startServer(t, nil)
	c := f.client(t, clientID)
	conn, err := c.Dial(ctx(t), f.key(), echo, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if !validTraceParent(f.lastReq.Meta.TraceParent) {
		t.Errorf("server saw traceparent %q, want a generated one", f.lastReq.Meta.TraceParent)
	}
	if f.lastReq.Meta.ForwardedFor.IsValid() || f.lastReq.Meta.Baggage != "" {
		t.Errorf("unexpected metadata %+v", f.lastReq.Meta)
	}
}

func TestPeerRejected(t *testing.T) {
	echo := startEcho(t)
	tests := []struct {
		name   string
		client func(f *fixture) *Client
		key    func(f *fixture) Key
		policy func(Peer) error
		isErr  error
	}{
		{
			name: "client from another trust domain (same root)",
			client: func(f *fixture) *Client {
				return &Client{Source: f.ca.source(t, "spiffe://evil.example/ns/default/sa/client")}
			},
		},
		{
			name: "client from another CA",
			client: func(f *fixture) *Client {
				other := newTestCA(t, "other")
				return &Client{Source: &source{cert: other.issue(t, clientID), roots: f.ca.pool}}
			},
		},
		{
			name:   "explicit policy refuses the service account",
			client: func(f *fixture) *Client { return &Client{Source: f.ca.source(t, clientID)} },
			policy: func(p Peer) error {
				if p.ID == clientID {
					return errors.New("denied")
				}
				return nil
			},
		},
		{
			name:   "server is not the expected identity",
			client: func(f *fixture) *Client { return &Client{Source: f.ca.source(t, clientID)} },
			key: func(f *fixture) Key {
				return Key{Src: clientID, Dst: "spiffe://cluster.local/ns/default/sa/other", Addr: f.addr}
			},
			isErr: ErrIdentityMismatch,
		},
		{
			name: "server trusted by nobody",
			client: func(f *fixture) *Client {
				other := newTestCA(t, "other")
				return &Client{Source: &source{cert: f.ca.issue(t, clientID), roots: other.pool}}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startServer(t, func(s *Server) { s.Authorize = tt.policy })
			c := tt.client(f)
			defer c.Close()
			key := f.key()
			if tt.key != nil {
				key = tt.key(f)
			}
			conn, err := c.Dial(ctx(t), key, echo, Meta{})
			if err == nil {
				conn.Close()
				t.Fatal("Dial succeeded, want the connection refused")
			}
			if tt.isErr != nil && !errors.Is(err, tt.isErr) {
				t.Errorf("err = %v, want %v", err, tt.isErr)
			}
			if got := f.srv.Stats().StreamsConnected.Load(); got != 0 {
				t.Errorf("server connected %d streams, want 0", got)
			}
			if c.Conns() != 0 {
				t.Errorf("client pooled %d connections after a failed handshake", c.Conns())
			}
		})
	}
}

func TestStreamRefused(t *testing.T) {
	// A closed port for the 503 case.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	echo := startEcho(t)

	tests := []struct {
		name   string
		target string
		dial   func(ctx context.Context, r *Request) (net.Conn, error)
		code   int
	}{
		{"destination down", closed, nil, 503},
		{"destination not allowed", "127.0.0.1:9", func(ctx context.Context, r *Request) (net.Conn, error) {
			if r.Target.Port() == 9 {
				return nil, ErrTargetDenied
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", r.Target.String())
		}, 403},
		{"authority is a name", "localhost:80", nil, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startServer(t, nil)
			if tt.dial != nil {
				f.srv.Dial = tt.dial
			}
			c := f.client(t, clientID)
			_, err := c.Dial(ctx(t), f.key(), tt.target, Meta{})
			var se *StatusError
			if !errors.As(err, &se) || se.Code != tt.code {
				t.Fatalf("err = %v, want status %d", err, tt.code)
			}
			// A refused stream leaves the connection usable.
			conn, err := c.Dial(ctx(t), f.key(), echo, Meta{})
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
			if c.Handshakes() != 1 {
				t.Errorf("handshakes = %d, want 1", c.Handshakes())
			}
		})
	}
}

func TestPoolReuse(t *testing.T) {
	echo := startEcho(t)
	f := startServer(t, nil)
	c := f.client(t, clientID)
	c.MaxStreamsPerConn = 3

	roundTrip := func(conn net.Conn) {
		t.Helper()
		if _, err := conn.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := io.ReadFull(conn, b); err != nil {
			t.Fatal(err)
		}
	}
	// Sequential streams share one connection.
	for range 10 {
		conn, err := c.Dial(ctx(t), f.key(), echo, Meta{})
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(conn)
		conn.Close()
	}
	if got := c.Handshakes(); got != 1 {
		t.Fatalf("after 10 sequential streams: %d handshakes, want 1", got)
	}

	// Seven concurrent streams with 3 per connection need 3 connections.
	var open []net.Conn
	for range 7 {
		conn, err := c.Dial(ctx(t), f.key(), echo, Meta{})
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(conn)
		open = append(open, conn)
	}
	if got := c.Handshakes(); got != 3 {
		t.Errorf("7 concurrent streams at 3/conn: %d handshakes, want 3", got)
	}
	for _, conn := range open {
		conn.Close()
	}

	// The destination's expected identity changes while the server at the
	// address is unchanged: reusing a pooled connection would succeed, so
	// the mismatch error proves a fresh handshake was made.
	k2 := Key{Src: clientID, Dst: "spiffe://cluster.local/ns/default/sa/server-v2", Addr: f.addr}
	_, err := c.Dial(ctx(t), k2, echo, Meta{})
	if !errors.Is(err, ErrIdentityMismatch) {
		t.Fatalf("dial with the new identity: err = %v, want ErrIdentityMismatch (no reuse)", err)
	}
	if got := c.Conns(); got != 0 {
		t.Errorf("%d connections for the old identity still pooled, want 0 (retired)", got)
	}
}

func TestIdentityChangeUsesNewConnection(t *testing.T) {
	echo := startEcho(t)
	ca := newTestCA(t, "mesh")
	// Two servers behind "the same address" over time: stop the first,
	// start the second on its port with another identity.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	s1 := &Server{Source: ca.source(t, serverID)}
	d1 := make(chan error, 1)
	go func() { d1 <- s1.Serve(ln) }()

	c := &Client{Source: ca.source(t, clientID), IdleTimeout: time.Hour}
	defer c.Close()
	k1 := Key{Src: clientID, Dst: serverID, Addr: addr}
	conn, err := c.Dial(ctx(t), k1, echo, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()

	s1.Close()
	<-d1
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("port %s not reusable: %v", addr, err)
	}
	const v2 = "spiffe://cluster.local/ns/default/sa/server-v2"
	s2 := &Server{Source: ca.source(t, v2)}
	d2 := make(chan error, 1)
	go func() { d2 <- s2.Serve(ln2) }()
	defer func() { s2.Close(); <-d2 }()

	k2 := Key{Src: clientID, Dst: v2, Addr: addr}
	conn, err = c.Dial(ctx(t), k2, echo, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("v2")); err != nil {
		t.Fatal(err)
	}
	if got := c.Handshakes(); got != 2 {
		t.Errorf("handshakes = %d, want 2", got)
	}
	// Dialing the old identity now fails instead of reusing anything.
	if _, err := c.Dial(ctx(t), k1, echo, Meta{}); !errors.Is(err, ErrIdentityMismatch) {
		t.Errorf("old identity: err = %v, want ErrIdentityMismatch", err)
	}
}

func TestIdleTimeoutClosesConnection(t *testing.T) {
	echo := startEcho(t)
	f := startServer(t, nil)
	c := f.client(t, clientID)
	c.IdleTimeout = 50 * time.Millisecond
	conn, err := c.Dial(ctx(t), f.key(), echo, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(150 * time.Millisecond)
	if c.Conns() != 1 {
		t.Fatal("connection with an open stream was closed as idle")
	}
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for c.Conns() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle connection not closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestHalfClose(t *testing.T) {
	// The destination reads to EOF, then answers with what it counted:
	// only possible if the client's FIN arrives while the reply path stays
	// open.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer func() { ln.Close(); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		_, _ = c.Write([]byte{byte(n)})
	}()

	f := startServer(t, nil)
	c := f.client(t, clientID)
	conn, err := c.Dial(ctx(t), f.key(), ln.Addr().String(), Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write(make([]byte, 42)); err != nil {
		t.Fatal(err)
	}
	if err := conn.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0] != 42 {
		t.Fatalf("reply = %v, want [42]", got)
	}
}

func TestReadDeadline(t *testing.T) {
	echo := startEcho(t)
	f := startServer(t, nil)
	c := f.client(t, clientID)
	conn, err := c.Dial(ctx(t), f.key(), echo, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read with no data: err = %v, want a timeout", err)
	}
	// A timeout is not fatal: clear it and the stream still works.
	_ = conn.SetReadDeadline(time.Time{})
	if _, err := conn.Write([]byte("y")); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(conn, b); err != nil || b[0] != 'y' {
		t.Fatalf("after timeout: %q, %v", b, err)
	}
}

func TestLargeTransferIntegrity(t *testing.T) {
	const size = 64 << 20
	echo := startEcho(t)
	f := startServer(t, nil)
	c := f.client(t, clientID)
	conn, err := c.Dial(ctx(t), f.key(), echo, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	sent := sha256.New()
	errc := make(chan error, 1)
	go func() {
		// Pseudo-random, non-repeating content so reordering or loss shows.
		buf := make([]byte, 1<<20)
		var x uint64 = 88172645463325252
		for written := 0; written < size; written += len(buf) {
			for i := 0; i+8 <= len(buf); i += 8 {
				x ^= x << 13
				x ^= x >> 7
				x ^= x << 17
				for j := range 8 {
					buf[i+j] = byte(x >> (8 * j))
				}
			}
			sent.Write(buf)
			if _, err := conn.Write(buf); err != nil {
				errc <- err
				return
			}
		}
		errc <- conn.(interface{ CloseWrite() error }).CloseWrite()
	}()
	got := sha256.New()
	n, err := io.Copy(got, conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if n != size {
		t.Fatalf("received %d bytes, want %d", n, size)
	}
	if !bytes.Equal(got.Sum(nil), sent.Sum(nil)) {
		t.Fatal("echoed data differs from what was sent")
	}
}

func TestConcurrentStreams(t *testing.T) {
	echo := startEcho(t)
	f := startServer(t, nil)
	c := f.client(t, clientID)
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := c.Dial(ctx(t), f.key(), echo, Meta{})
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close()
			msg := bytes.Repeat([]byte{byte(i)}, 10000)
			if _, err := conn.Write(msg); err != nil {
				errs <- err
				return
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(conn, got); err != nil || !bytes.Equal(got, msg) {
				errs <- errors.Join(err, errors.New("stream data mixed up"))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := c.Handshakes(); got != 1 {
		t.Errorf("50 concurrent streams (max 100/conn): %d handshakes, want 1", got)
	}
}

func TestServerCloseEndsStreams(t *testing.T) {
	echo := startEcho(t)
	f := startServer(t, nil)
	c := f.client(t, clientID)
	conn, err := c.Dial(ctx(t), f.key(), echo, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	f.srv.Close()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("read succeeded after the server closed")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("stream still open 5s after the server closed")
	}
}

func TestClusterTunnel(t *testing.T) {
	echo := startEcho(t)
	f := startServer(t, nil)
	ct := &ClusterTunnel{Client: f.client(t, clientID), Src: clientID}
	tests := []struct {
		name string
		cfg  *state.HBONE
		ok   bool
	}{
		{"explicit endpoint and identity", &state.HBONE{Address: f.addr, Identity: serverID}, true},
		{"any mesh identity", &state.HBONE{Address: f.addr}, true},
		{"wrong identity", &state.HBONE{Address: f.addr, Identity: clientID}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := ct.DialTunnel(ctx(t), tt.cfg, echo)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok=%v", err, tt.ok)
			}
			if err != nil {
				return
			}
			defer conn.Close()
			if _, err := conn.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 4)
			if _, err := io.ReadFull(conn, b); err != nil || string(b) != "ping" {
				t.Fatalf("echo %q, %v", b, err)
			}
		})
	}
	// Port defaulting: the tunnel endpoint is the target's IP at cfg.Port.
	_, port, _ := net.SplitHostPort(f.addr)
	p, _ := strconv.Atoi(port)
	conn, err := ct.DialTunnel(ctx(t), &state.HBONE{Port: uint32(p)}, echo)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}
