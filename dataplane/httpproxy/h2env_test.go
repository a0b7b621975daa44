package httpproxy

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
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/state"
)

// h2Serve is how the test listeners hand connections to the proxy. It
// defaults to the HTTP/2 entry point so these tests do not depend on the
// HTTP/1.1 side's ServeConn; tests of codec selection use ServeConn.
type h2ServeFunc func(p *Proxy, ctx context.Context, conn net.Conn, hcm *state.HTTPConnectionManager, info *ConnInfo)

func serveViaH2(p *Proxy, ctx context.Context, conn net.Conn, hcm *state.HTTPConnectionManager, info *ConnInfo) {
	p.serveHTTP2(ctx, conn, hcm, info)
}

func serveViaServeConn(p *Proxy, ctx context.Context, conn net.Conn, hcm *state.HTTPConnectionManager, info *ConnInfo) {
	p.ServeConn(ctx, conn, hcm, info)
}

// h2Env is a proxy on a loopback listener with a hand-built state.Store.
type h2Env struct {
	t     testing.TB
	store *state.Store
	mgr   *upstream.Manager
	p     *Proxy
	hcm   *state.HTTPConnectionManager
	addr  string

	ctx    context.Context
	cancel context.CancelFunc
	ln     net.Listener
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
	accept atomic.Int64
}

type h2EnvOpts struct {
	serve h2ServeFunc
	// tls terminates TLS (ALPN h2, http/1.1) before handing the conn over.
	tls      *tls.Config
	hcm      *state.HTTPConnectionManager
	clusters []*state.Cluster
	// rc is the inline route configuration (hcm.RouteConfig).
	rc *state.RouteConfig
}

func newH2Env(t testing.TB, o h2EnvOpts) *h2Env {
	t.Helper()
	store := state.NewStore()
	store.Update(func(next *state.Snapshot) bool {
		for _, c := range o.clusters {
			next.Clusters[c.Name] = c
		}
		return true
	})
	mgr := upstream.NewManager(store, nil)
	hcm := o.hcm
	if hcm == nil {
		hcm = &state.HTTPConnectionManager{Codec: state.CodecHTTP2}
	}
	hcm.RouteConfig = o.rc
	serve := o.serve
	if serve == nil {
		serve = serveViaH2
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e := &h2Env{
		t: t, store: store, mgr: mgr, hcm: hcm, ln: ln, addr: ln.Addr().String(),
		p: New(store, mgr, Options{DebugHeaders: true, Hostname: "test"}, nil),
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.accept.Add(1)
			e.mu.Lock()
			e.conns = append(e.conns, c)
			e.mu.Unlock()
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				info := &ConnInfo{
					Remote:   netip.MustParseAddrPort(c.RemoteAddr().String()),
					Local:    netip.MustParseAddrPort(c.LocalAddr().String()),
					Listener: "test",
				}
				info.OriginalDst = info.Local
				if o.tls != nil {
					tc := tls.Server(c, o.tls)
					hctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
					err := tc.HandshakeContext(hctx)
					cancel()
					if err != nil {
						c.Close()
						return
					}
					st := tc.ConnectionState()
					info.TLS = &st
					c = tc
				}
				serve(e.p, e.ctx, c, hcm, info)
			}()
		}
	}()
	t.Cleanup(e.close)
	return e
}

// drain cancels the serving context (listener drain) without closing.
func (e *h2Env) drain() { e.cancel() }

func (e *h2Env) close() {
	e.ln.Close()
	e.cancel()
	e.mu.Lock()
	for _, c := range e.conns {
		c.Close()
	}
	e.mu.Unlock()
	e.wg.Wait()
	e.mgr.Close()
}

// staticCluster is a STATIC cluster with one endpoint per address.
func staticCluster(name string, proto state.UpstreamProtocol, addrs ...string) *state.Cluster {
	var eps []state.Endpoint
	for _, a := range addrs {
		eps = append(eps, state.Endpoint{Address: a, Weight: 1})
	}
	return &state.Cluster{
		Name:           name,
		Type:           state.ClusterStatic,
		ConnectTimeout: 2 * time.Second,
		Protocol:       proto,
		LoadAssignment: &state.ClusterLoadAssignment{
			ClusterName: name,
			Localities:  []state.LocalityEndpoints{{Endpoints: eps}},
		},
	}
}

// routeAll is a route configuration sending every request to cluster.
func routeAll(cluster string) *state.RouteConfig {
	return &state.RouteConfig{
		Name: "rc",
		VirtualHosts: []*state.VirtualHost{{
			Name:    "all",
			Domains: []string{"*"},
			Routes: []*state.Route{{
				Name:   "default",
				Match:  state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true},
				Action: &state.RouteAction{Cluster: cluster},
			}},
		}},
	}
}

// h2cClient is an HTTP/2 prior-knowledge client (no TLS).
func h2cClient(t testing.TB) (*http.Client, *http.Transport) {
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}, tr
}

// h2TLSClient is an HTTP/2-only client over TLS trusting pool.
func h2TLSClient(t *testing.T, pool *x509.CertPool) *http.Client {
	tr := &http.Transport{
		Protocols:       new(http.Protocols),
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"},
	}
	tr.Protocols.SetHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 20 * time.Second}
}

// h2Backend is a loopback HTTP server speaking HTTP/1.1 and h2c (prior
// knowledge), counting the connections it accepts.
type h2Backend struct {
	srv    *http.Server
	addr   string
	conns  atomic.Int64 // accepted so far
	active atomic.Int64 // open now
	ln     net.Listener
}

func newH2Backend(t testing.TB, maxStreams int, h http.Handler) *h2Backend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &h2Backend{addr: ln.Addr().String(), ln: ln}
	b.srv = &http.Server{
		Handler:   h,
		Protocols: new(http.Protocols),
		HTTP2:     &http.HTTP2Config{MaxConcurrentStreams: maxStreams},
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				b.conns.Add(1)
				b.active.Add(1)
			case http.StateClosed, http.StateHijacked:
				b.active.Add(-1)
			}
		},
	}
	b.srv.Protocols.SetHTTP1(true)
	b.srv.Protocols.SetUnencryptedHTTP2(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = b.srv.Serve(ln)
	}()
	t.Cleanup(func() {
		_ = b.srv.Close()
		<-done
	})
	return b
}

// testCert returns a self-signed certificate for 127.0.0.1 and localhost
// and a pool trusting it.
func testCert(t *testing.T) (tls.Certificate, *x509.CertPool, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "meshlet test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true,

		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	return cert, pool, certPEM, keyPEM
}

// h2PoolFor returns the HTTP/2 pool the proxy keeps for the endpoint addr
// of cluster name (nil when none was created).
func h2PoolFor(e *h2Env, cluster, addr string) *h2Pool {
	c := e.mgr.Cluster(cluster)
	if c == nil {
		return nil
	}
	for _, h := range c.LB.Hosts() {
		if h.Address == addr {
			return c.Endpoint(h).Pool(upstream.PoolHTTP2, func(ep *upstream.Endpoint) io.Closer { return newH2Pool(ep) }).(*h2Pool)
		}
	}
	return nil
}

// h2LeakCheck fails t if goroutines started during the test outlive it.
// Registered first, its cleanup runs after every other cleanup of t.
func h2LeakCheck(t *testing.T) {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}
