package dataplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// env is a running Server over a Store and an upstream.Manager.
type env struct {
	t        *testing.T
	store    *state.Store
	clusters *upstream.Manager
	srv      *Server
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	store := state.NewStore()
	mgr := upstream.NewManager(store, opts.Log)
	srv := New(store, mgr, nil, opts)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		mgr.Close()
	})
	return &env{t: t, store: store, clusters: mgr, srv: srv}
}

// cluster publishes a STATIC cluster with the given endpoints.
func (e *env) cluster(name string, addrs ...string) {
	c := &state.Cluster{Name: name, Type: state.ClusterStatic, ConnectTimeout: time.Second,
		LoadAssignment: &state.ClusterLoadAssignment{ClusterName: name}}
	loc := state.LocalityEndpoints{}
	for _, a := range addrs {
		loc.Endpoints = append(loc.Endpoints, state.Endpoint{Address: a, Weight: 1})
	}
	c.LoadAssignment.Localities = []state.LocalityEndpoints{loc}
	e.store.Update(func(n *state.Snapshot) bool { n.Clusters[name] = c; return true })
}

func (e *env) listener(l *state.Listener) {
	e.store.Update(func(n *state.Snapshot) bool { n.Listeners[l.Name] = l; return true })
}

func (e *env) removeListener(name string) {
	e.store.Update(func(n *state.Snapshot) bool { delete(n.Listeners, name); return true })
}

// addr returns the bound address of a listener, failing the test if none.
func (e *env) addr(name string) string {
	e.t.Helper()
	a := e.srv.Addr(name)
	if a == nil {
		e.t.Fatalf("listener %q not bound; errors: %v", name, e.srv.Errors())
	}
	return a.String()
}

func loopback0() netip.AddrPort { return netip.MustParseAddrPort("127.0.0.1:0") }

func tcpChain(name, cluster string) *state.FilterChain {
	return &state.FilterChain{Name: name, TCPProxy: &state.TCPProxy{Cluster: cluster}}
}

func tcpListener(name string, chains ...*state.FilterChain) *state.Listener {
	return &state.Listener{Name: name, Address: loopback0(), BindToPort: true, FilterChains: chains}
}

// backend is a real TCP server on loopback running handler per connection.
type backend struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func startBackend(t *testing.T, handler func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveBackend(t, ln, handler)
}

func serveBackend(t *testing.T, ln net.Listener, handler func(net.Conn)) string {
	b := &backend{ln: ln, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			b.mu.Lock()
			b.conns[c] = struct{}{}
			b.mu.Unlock()
			b.wg.Add(1)
			go func() {
				defer b.wg.Done()
				defer c.Close()
				handler(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		b.mu.Lock()
		for c := range b.conns {
			c.Close()
		}
		b.mu.Unlock()
		b.wg.Wait()
	})
	return ln.Addr().String()
}

// lineEcho answers every line with tag + ":" + line.
func lineEcho(tag string) func(net.Conn) {
	return func(c net.Conn) {
		buf := make([]byte, 4096)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				if _, werr := c.Write(append([]byte(tag+":"), buf[:n]...)); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
}

// greet writes tag first (a server-first protocol) and then echoes.
func greet(tag string) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := c.Write([]byte(tag)); err != nil {
			return
		}
		_, _ = io.Copy(c, c)
	}
}

func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return c.(*net.TCPConn)
}

// roundTrip writes msg and reads exactly len(want) bytes.
func roundTrip(t *testing.T, c net.Conn, msg, want string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read (want %q): %v (got %q)", want, err, got)
	}
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// expectClosed asserts the peer closes c without sending anything.
func expectClosed(t *testing.T, c net.Conn, within time.Duration) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	n, err := c.Read(make([]byte, 64))
	if err == nil || n > 0 {
		t.Fatalf("connection still open: read %d bytes, err %v", n, err)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection not closed within %v", within)
	}
}

// eventually polls cond for up to 5s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// testCert is a self-signed certificate for the given DNS names.
type testCert struct {
	certPEM, keyPEM []byte
	pool            *x509.CertPool
	tls             tls.Certificate
}

func newCert(t *testing.T, names ...string) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              names,
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := &testCert{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		pool:    x509.NewCertPool(),
	}
	c.pool.AppendCertsFromPEM(c.certPEM)
	c.tls, err = tls.X509KeyPair(c.certPEM, c.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
