package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/meshlet/meshlet/hbone"
	"github.com/meshlet/meshlet/state"
)

// proxyApp is a workload that terminates its own tunnel: every connection
// must start with a PROXY v2 header, after which it serves HTTP and
// answers "app src=IP id=SPIFFE dst=IP:PORT METHOD URI" from the header.
type proxyApp struct {
	addr netip.AddrPort
	mu   sync.Mutex
	errs []error
}

type ppConn struct {
	net.Conn
	h ppHeader
}

type ppListener struct {
	net.Listener
	app *proxyApp
}

type ppKey struct{}

func (l *ppListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		h, err := readPROXYv2(c)
		_ = c.SetReadDeadline(time.Time{})
		if err != nil {
			l.app.mu.Lock()
			l.app.errs = append(l.app.errs, err)
			l.app.mu.Unlock()
			c.Close()
			continue
		}
		return &ppConn{Conn: c, h: h}, nil
	}
}

func newProxyApp(t *testing.T, ip string) *proxyApp {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	app := &proxyApp{addr: netip.MustParseAddrPort(ln.Addr().String())}
	srv := &http.Server{
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, ppKey{}, c.(*ppConn).h)
		},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := r.Context().Value(ppKey{}).(ppHeader)
			fmt.Fprintf(w, "app src=%s id=%s dst=%s %s %s", h.src.Addr(), h.tlvs[0xD0], h.dst, r.Method, r.URL.RequestURI())
		}),
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(&ppListener{Listener: ln, app: app}) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return app
}

func (a *proxyApp) headerErrors() []error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]error(nil), a.errs...)
}

// TestInboundAppTunnelPROXY: a workload whose application_tunnel is PROXY
// receives each HBONE delivery on its tunnel port (or the original one)
// prefixed with a PROXY v2 header naming the client's address, the
// CONNECT target and the client's SPIFFE ID, at L4 and when requests are
// judged at L7. Without it (or with NONE) delivery is plain TCP.
func TestInboundAppTunnelPROXY(t *testing.T) {
	m := newMesh(t)
	a := wl("a", "127.0.0.61", "n1", state.TunnelHBONE)
	b := wl("b", "127.0.0.62", "n2", state.TunnelHBONE)
	app := newProxyApp(t, "127.0.0.62")
	plain := httpBackend(t, "127.0.0.62", "plain")
	aID := "spiffe://cluster.local/ns/default/sa/a"
	want := func(target netip.AddrPort, uri string) string {
		return fmt.Sprintf("200 app src=127.0.0.61 id=%s dst=%s GET %s", aID, target, uri)
	}

	cases := []struct {
		name     string
		tunnel   *state.AppTunnel
		policies []*state.Authorization
		target   netip.AddrPort // the original destination a dials
		reqs     []string
		want     []string
	}{
		{name: "PROXY to the tunnel port", tunnel: &state.AppTunnel{Protocol: state.AppTunnelPROXY, Port: app.addr.Port()},
			target: plain, reqs: []string{"GET /x"}, want: []string{want(plain, "/x")}},
		{name: "PROXY to the original port", tunnel: &state.AppTunnel{Protocol: state.AppTunnelPROXY},
			target: app.addr, reqs: []string{"GET /y"}, want: []string{want(app.addr, "/y")}},
		{name: "PROXY with L7 authorization", tunnel: &state.AppTunnel{Protocol: state.AppTunnelPROXY, Port: app.addr.Port()},
			policies: l7Policies(), target: plain, reqs: []string{"GET /x", "GET /admin", "GET /z"},
			want: []string{want(plain, "/x"), "403 RBAC: access denied", want(plain, "/z")}},
		{name: "NONE only moves the port", tunnel: &state.AppTunnel{Protocol: state.AppTunnelNone, Port: plain.Port()},
			target: app.addr, reqs: []string{"GET /n"}, want: []string{"200 plain GET /n HTTP/1.1"}},
		{name: "no application tunnel is plain", target: plain,
			reqs: []string{"GET /p"}, want: []string{"200 plain GET /p HTTP/1.1"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bb := *b
			bb.AppTunnel = c.tunnel
			m.set([]*state.Workload{a, &bb}, nil, c.policies)
			n2 := m.proxy("n2")
			m.serveInbound(n2, &bb)
			n1 := m.proxy("n1")
			n1.HBONE = &hbone.Client{SourceFor: n1.hboneSource, DialContext: dialerFrom("127.0.0.61")}
			t.Cleanup(func() { n1.HBONE.Close() })
			via, _ := capture(t, n1, a, c.target)
			got := rawRequests(t, via, c.reqs...)
			if fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("answers\n got %q\nwant %q", got, c.want)
			}
			if errs := app.headerErrors(); len(errs) > 0 {
				t.Errorf("app saw bad headers: %v", errs)
			}
		})
	}
}
