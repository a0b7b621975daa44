package httpproxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/state"
	"go.uber.org/goleak"
)

// proxyEnv is a Proxy serving a loopback listener, with a hand-built
// state.Store and upstream.Manager.
type proxyEnv struct {
	t      testing.TB
	store  *state.Store
	mgr    *upstream.Manager
	proxy  *Proxy
	ln     net.Listener
	addr   string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newProxyEnv(t testing.TB, hcm *state.HTTPConnectionManager, clusters ...*state.Cluster) *proxyEnv {
	t.Helper()
	return newProxyEnvOpts(t, hcm, Options{DebugHeaders: true, Hostname: "test-host"}, clusters...)
}

func newProxyEnvOpts(t testing.TB, hcm *state.HTTPConnectionManager, opts Options, clusters ...*state.Cluster) *proxyEnv {
	t.Helper()
	return newProxyEnvAddr(t, "127.0.0.1:0", hcm, opts, clusters...)
}

func newProxyEnvAddr(t testing.TB, listen string, hcm *state.HTTPConnectionManager, opts Options, clusters ...*state.Cluster) *proxyEnv {
	t.Helper()
	if tt, ok := t.(*testing.T); ok {
		opt := goleak.IgnoreCurrent()
		tt.Cleanup(func() { goleak.VerifyNone(tt, opt) })
	}
	e := &proxyEnv{t: t, store: state.NewStore()}
	e.store.Update(func(s *state.Snapshot) bool {
		for _, c := range clusters {
			s.Clusters[c.Name] = c
		}
		return true
	})
	e.mgr = upstream.NewManager(e.store, nil)
	e.proxy = New(e.store, e.mgr, opts, nil)
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
	e.ln = ln
	e.addr = ln.Addr().String()
	e.ctx, e.cancel = context.WithCancel(context.Background())
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			info := &ConnInfo{
				Remote: netip.MustParseAddrPort(c.RemoteAddr().String()),
				Local:  netip.MustParseAddrPort(c.LocalAddr().String()),
			}
			e.wg.Add(1)
			go func() {
				defer e.wg.Done()
				e.proxy.ServeConn(e.ctx, c, hcm, info)
			}()
		}
	}()
	t.Cleanup(e.close)
	return e
}

func (e *proxyEnv) close() {
	e.cancel()
	e.ln.Close()
	e.wg.Wait()
	e.mgr.Close()
}

// serveProxy serves p on a new loopback listener until the test ends;
// info describes each accepted connection to the proxy (which downstream
// and original destination it claims). It returns the listener's address.
func serveProxy(t testing.TB, p *Proxy, hcm *state.HTTPConnectionManager, info func(c net.Conn) *ConnInfo) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ci := info(c)
			wg.Go(func() { p.ServeConn(ctx, c, hcm, ci) })
		}
	})
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// h1Cluster returns a STATIC cluster over addrs.
func h1Cluster(name string, addrs ...string) *state.Cluster {
	c := &state.Cluster{Name: name, Type: state.ClusterStatic, ConnectTimeout: time.Second}
	var eps []state.Endpoint
	for _, a := range addrs {
		eps = append(eps, state.Endpoint{Address: a, Weight: 1})
	}
	c.LoadAssignment = &state.ClusterLoadAssignment{ClusterName: name,
		Localities: []state.LocalityEndpoints{{Endpoints: eps}}}
	return c
}

// simpleHCM routes every request to cluster.
func simpleHCM(cluster string) *state.HTTPConnectionManager {
	return &state.HTTPConnectionManager{
		StatPrefix: "test",
		RouteConfig: &state.RouteConfig{Name: "rc", VirtualHosts: []*state.VirtualHost{{
			Name: "all", Domains: []string{"*"},
			Routes: []*state.Route{{Name: "r", Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true},
				Action: &state.RouteAction{Cluster: cluster, Timeout: 5 * time.Second}}},
		}}},
		GenerateRequestID: true,
	}
}

// backend is a net/http server counting its connections.
type backend struct {
	*httptest.Server
	conns atomic.Int64
}

func newBackend(t testing.TB, h http.Handler) *backend {
	t.Helper()
	b := &backend{}
	b.Server = httptest.NewUnstartedServer(h)
	b.Server.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.Start()
	t.Cleanup(b.Close)
	return b
}

func (b *backend) hostport() string { return strings.TrimPrefix(b.URL, "http://") }

// rawConn is a client connection speaking raw HTTP/1.1.
type rawConn struct {
	net.Conn
	br *bufio.Reader
}

func (e *proxyEnv) dial() *rawConn {
	e.t.Helper()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		e.t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	e.t.Cleanup(func() { c.Close() })
	return &rawConn{Conn: c, br: bufio.NewReader(c)}
}

// roundTrip writes raw and reads one response.
func (c *rawConn) roundTrip(t testing.TB, raw string) (*http.Response, string) {
	t.Helper()
	if raw != "" {
		if _, err := io.WriteString(c, raw); err != nil {
			t.Fatal(err)
		}
	}
	return c.read(t, "GET")
}

func (c *rawConn) read(t testing.TB, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, string(b)
}

// client returns an http.Client through the proxy with keep-alive.
func (e *proxyEnv) client() *http.Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", e.addr)
		},
		MaxIdleConnsPerHost: 16,
	}
	e.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}
