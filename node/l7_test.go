package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshlet/meshlet/hbone"
	"github.com/meshlet/meshlet/state"
)

// httpBackend serves on ip: every request is answered with
// "name METHOD REQUEST-URI proto".
func httpBackend(t *testing.T, ip, name string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s %s", name, r.Method, r.URL.RequestURI(), r.Proto)
	})}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return netip.MustParseAddrPort(ln.Addr().String())
}

// rawRequests writes each request line over one connection to addr (so
// paths reach the proxy byte for byte) and returns status and body of
// each answer.
func rawRequests(t *testing.T, addr string, reqs ...string) []string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	var out []string
	for _, line := range reqs {
		if _, err := fmt.Fprintf(c, "%s HTTP/1.1\r\nHost: b.default\r\nContent-Length: 0\r\n\r\n", line); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out = append(out, fmt.Sprintf("%d %s", resp.StatusCode, b))
	}
	return out
}

func l7Policies() []*state.Authorization {
	exact := func(v string) state.AuthzString { return state.AuthzString{Kind: state.AuthzExact, Value: v} }
	prefix := func(v string) state.AuthzString { return state.AuthzString{Kind: state.AuthzPrefix, Value: v} }
	return []*state.Authorization{
		{Name: "deny-admin", Namespace: "default", Scope: state.AuthzNamespace, Action: state.AuthzDeny,
			Groups: []state.AuthzGroup{{Rules: []state.AuthzRule{{Matches: []state.AuthzMatch{{Paths: []state.AuthzString{prefix("/admin")}}}}}}}},
		{Name: "allow-get", Namespace: "default", Scope: state.AuthzNamespace,
			Groups: []state.AuthzGroup{{Rules: []state.AuthzRule{{Matches: []state.AuthzMatch{{Methods: []state.AuthzString{exact("GET")}}}}}}}},
	}
}

// TestInboundL7Authorization: a policy with L7 matches makes the
// destination's node terminate HTTP on the tunnel and judge each request
// on its normalized path and method; allowed requests reach the pod with
// the normalized path, over HTTP/1.1 and h2c.
func TestInboundL7Authorization(t *testing.T) {
	m := newMesh(t)
	a := wl("a", "127.0.0.71", "n1", state.TunnelHBONE)
	b := wl("b", "127.0.0.72", "n2", state.TunnelHBONE)
	bAddr := httpBackend(t, "127.0.0.72", "b")
	m.set([]*state.Workload{a, b}, nil, l7Policies())
	n1, n2 := m.proxy("n1"), m.proxy("n2")
	m.serveInbound(n2, b)
	via, errs := capture(t, n1, a, bAddr)

	got := rawRequests(t, via,
		"GET /public",
		"GET /admin",
		"GET //admin",
		"GET /%61dmin",
		"GET /public/../admin/x",
		"POST /public",
		"GET /public/./x?q=1",
	)
	want := []string{
		"200 b GET /public HTTP/1.1",
		"403 RBAC: access denied",
		"403 RBAC: access denied",
		"403 RBAC: access denied",
		"403 RBAC: access denied",
		"403 RBAC: access denied",
		"200 b GET /public/x?q=1 HTTP/1.1",
	}
	for i := range want {
		if i >= len(got) || got[i] != want[i] {
			t.Errorf("request %d: got %q, want %q", i, got, want[i])
		}
	}
	if n := n2.Stats().RequestsDenied.Load(); n != 5 {
		t.Errorf("requests denied = %d, want 5", n)
	}

	// h2c with prior knowledge keeps HTTP/2 to the pod.
	tr := &http.Transport{Protocols: new(http.Protocols), DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", via)
	}}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	for path, want := range map[string]string{"/public": "200 b GET /public HTTP/2.0", "/admin": "403 RBAC: access denied"} {
		resp, err := hc.Get("http://" + bAddr.String() + path)
		if err != nil {
			t.Fatalf("h2c %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if g := fmt.Sprintf("%d %s", resp.StatusCode, body); g != want {
			t.Errorf("h2c %s: %q, want %q", path, g, want)
		}
	}
	tr.CloseIdleConnections()
	select {
	case err := <-errs:
		t.Errorf("outbound error: %v", err)
	default:
	}
}

// TestInboundL7OnlyWhenNeeded: the connection-time decision is final when
// no L7 match can change it, and then the stream is spliced to the pod
// (a TCP connection is returned, not the HTTP pipe).
func TestInboundL7OnlyWhenNeeded(t *testing.T) {
	exact := func(v string) state.AuthzString { return state.AuthzString{Kind: state.AuthzExact, Value: v} }
	pathOn9000 := &state.Authorization{Name: "deny-admin-9000", Namespace: "default", Scope: state.AuthzNamespace, Action: state.AuthzDeny,
		Groups: []state.AuthzGroup{{Rules: []state.AuthzRule{{Matches: []state.AuthzMatch{{
			DestinationPorts: []uint16{9000}, Paths: []state.AuthzString{exact("/admin")}}}}}}}}
	l4Deny := &state.Authorization{Name: "deny-z", Namespace: "default", Scope: state.AuthzNamespace, Action: state.AuthzDeny,
		Groups: []state.AuthzGroup{{Rules: []state.AuthzRule{{Matches: []state.AuthzMatch{{
			Principals: []state.AuthzString{exact("cluster.local/ns/default/sa/z")}}}}}}}}
	const peer = "spiffe://cluster.local/ns/default/sa/a"
	cases := []struct {
		name     string
		policies []*state.Authorization
		peer     string
		port     int // 0: the backend's port
		want     string
	}{
		{"L4-only policy", []*state.Authorization{l4Deny}, peer, 0, "tcp"},
		{"L4 deny decides before L7", append(l7Policies(), l4Deny), "spiffe://cluster.local/ns/default/sa/z", 0, "denied"},
		{"L7 policies", l7Policies(), peer, 0, "http"},
		{"L7 match on another port", []*state.Authorization{pathOn9000}, peer, 0, "tcp"},
		{"L7 match on this port", []*state.Authorization{pathOn9000}, peer, 9000, "http"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newMesh(t)
			b := wl("b", "127.0.0.73", "n1", state.TunnelHBONE)
			bAddr := echo(t, "127.0.0.73", "b")
			if c.port != 0 {
				bAddr = netip.AddrPortFrom(bAddr.Addr(), uint16(c.port))
			}
			m.set([]*state.Workload{b}, nil, c.policies)
			p := m.proxy("n1")
			p.PodDial = func(ctx context.Context, _ *state.Workload, addr netip.AddrPort) (net.Conn, error) {
				// Port 9000 is not listened on; the echo stands in.
				if addr.Port() == 9000 {
					return nil, errors.New("no dial expected for the HTTP path")
				}
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr.String())
			}
			conn, err := p.Inbound(context.Background(), &hbone.Request{Target: bAddr, Peer: hbone.Peer{ID: c.peer}, RemoteAddr: "127.0.0.1:9"})
			got := "denied"
			switch conn.(type) {
			case nil:
			case *net.TCPConn:
				got = "tcp"
			case *halfClosePipe:
				got = "http"
			default:
				got = fmt.Sprintf("%T", conn)
			}
			if conn != nil {
				conn.Close()
			}
			if got != c.want || (got == "denied") != (err != nil) {
				t.Errorf("got %s (err %v), want %s", got, err, c.want)
			}
		})
	}
}

// A client that half-closes after its request still gets the answer, and
// the tunneled stream ends instead of idling.
func TestInboundL7HalfClose(t *testing.T) {
	m := newMesh(t)
	b := wl("b", "127.0.0.74", "n1", state.TunnelHBONE)
	bAddr := httpBackend(t, "127.0.0.74", "b")
	m.set([]*state.Workload{b}, nil, l7Policies())
	p := m.proxy("n1")
	conn, err := p.Inbound(context.Background(), &hbone.Request{Target: bAddr, Peer: hbone.Peer{ID: "spiffe://cluster.local/ns/default/sa/a"}, RemoteAddr: "127.0.0.1:9"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var wg sync.WaitGroup
	wg.Add(1)
	var body []byte
	go func() {
		defer wg.Done()
		body, _ = io.ReadAll(conn)
	}()
	io.WriteString(conn, "GET /public HTTP/1.1\r\nHost: b\r\n\r\n")
	conn.(interface{ CloseWrite() error }).CloseWrite()
	wg.Wait()
	if !strings.Contains(string(body), "200 OK") || !strings.HasSuffix(string(body), "b GET /public HTTP/1.1") {
		t.Errorf("answer = %q", body)
	}
}

// TestInboundWaypointEnforcement: a workload with a waypoint accepts
// tunnels from the waypoint's identity only, unless it opts out.
func TestInboundWaypointEnforcement(t *testing.T) {
	ip := netip.MustParseAddr
	wpSvc := &state.Service{Name: "waypoint", Namespace: "default", Hostname: "waypoint.default.svc.cluster.local",
		Addresses: []state.NetworkAddr{{Addr: ip("10.96.9.9")}}, Ports: []state.PortMapping{{ServicePort: 15008}}}
	wp := wl("wp", "10.0.9.1", "n2", state.TunnelHBONE)
	wp.ServiceAccount = "waypoint"
	wp.Services = map[string][]state.PortMapping{wpSvc.Key(): nil}
	cases := []struct {
		name   string
		gw     *state.GatewayAddress
		bypass bool
		peer   string
		ok     bool
	}{
		{"no waypoint", nil, false, "spiffe://cluster.local/ns/default/sa/a", true},
		{"from the waypoint (by hostname)", &state.GatewayAddress{Namespace: "default", Hostname: wpSvc.Hostname}, false, wp.Identity(), true},
		{"from the waypoint (by VIP)", &state.GatewayAddress{Address: state.NetworkAddr{Addr: ip("10.96.9.9")}}, false, wp.Identity(), true},
		{"from the waypoint (by pod address)", &state.GatewayAddress{Address: state.NetworkAddr{Addr: ip("10.0.9.1")}}, false, wp.Identity(), true},
		{"bypassing the waypoint", &state.GatewayAddress{Namespace: "default", Hostname: wpSvc.Hostname}, false, "spiffe://cluster.local/ns/default/sa/a", false},
		{"unknown waypoint", &state.GatewayAddress{Address: state.NetworkAddr{Addr: ip("10.96.9.99")}}, false, wp.Identity(), false},
		{"opted out", &state.GatewayAddress{Namespace: "default", Hostname: wpSvc.Hostname}, true, "spiffe://cluster.local/ns/default/sa/a", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := newMesh(t)
			b := wl("b", "127.0.0.75", "n1", state.TunnelHBONE)
			b.Waypoint, b.AllowWaypointBypass = c.gw, c.bypass
			bAddr := echo(t, "127.0.0.75", "b")
			m.set([]*state.Workload{b, wp}, []*state.Service{wpSvc}, nil)
			p := m.proxy("n1")
			conn, err := p.Inbound(context.Background(), &hbone.Request{Target: bAddr, Peer: hbone.Peer{ID: c.peer}, RemoteAddr: "127.0.0.1:9"})
			if conn != nil {
				conn.Close()
			}
			if (err == nil) != c.ok {
				t.Fatalf("err = %v, want ok=%v", err, c.ok)
			}
			if err != nil && (!errors.Is(err, ErrBypassedWaypoint) || !errors.Is(err, hbone.ErrTargetDenied) || !IsDenied(err)) {
				t.Errorf("err = %v, want ErrBypassedWaypoint (403)", err)
			}
		})
	}
}

// TestIdentitiesReleased: when the last local workload using an identity
// leaves, its certificate source is dropped; a workload coming back gets
// a newly issued certificate. Other nodes' workloads do not count.
func TestIdentitiesReleased(t *testing.T) {
	m := newMesh(t)
	a := wl("a", "127.0.0.81", "n1", state.TunnelHBONE)
	a2 := wl("a2", "127.0.0.82", "n1", state.TunnelHBONE)
	a2.ServiceAccount = "a" // same identity as a
	c := wl("c", "127.0.0.83", "n1", state.TunnelHBONE)
	m.set([]*state.Workload{a, a2, c}, nil, nil)
	p := m.proxy("n1")
	ctx := context.Background()
	serial := func(w *state.Workload) string {
		t.Helper()
		id, _ := parseWorkloadID(w.Identity())
		src, err := p.Identities.Source(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := src.Certificate()
		if err != nil {
			t.Fatal(err)
		}
		return cert.Leaf.SerialNumber.String()
	}
	// First use registers the release.
	if _, err := p.InboundServer(ctx, a); err != nil {
		t.Fatal(err)
	}
	first := serial(a)
	serial(c)
	if m.ids.Len() != 2 {
		t.Fatalf("identities = %d, want 2", m.ids.Len())
	}
	// a leaves but a2 shares its identity: kept.
	m.set([]*state.Workload{a2, c}, nil, nil)
	if m.ids.Len() != 2 || serial(a2) != first {
		t.Fatalf("identity in use by a2 was released (%d held)", m.ids.Len())
	}
	// a2 moves to another node: nobody here uses the identity.
	a2other := *a2
	a2other.Node = "n2"
	m.set([]*state.Workload{&a2other, c}, nil, nil)
	if m.ids.Len() != 1 {
		t.Fatalf("identities = %d after the last user left, want 1", m.ids.Len())
	}
	m.set([]*state.Workload{a, &a2other, c}, nil, nil)
	if again := serial(a); again == first {
		t.Error("re-added workload got the released certificate again")
	}
	if m.ids.Len() != 2 {
		t.Errorf("identities = %d, want 2", m.ids.Len())
	}
}

// A plaintext client (in-pod 15006) is judged per request too.
func TestInboundPlaintextL7(t *testing.T) {
	m := newMesh(t)
	b := wl("b", "127.0.0.76", "n1", state.TunnelHBONE)
	bAddr := httpBackend(t, "127.0.0.76", "b")
	m.set([]*state.Workload{b}, nil, l7Policies())
	p := m.proxy("n1")
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
		_ = p.HandleInboundPlaintext(context.Background(), c, bAddr)
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	got := rawRequests(t, ln.Addr().String(), "GET /public", "DELETE /public", "GET /admin/../admin")
	want := []string{"200 b GET /public HTTP/1.1", "403 RBAC: access denied", "403 RBAC: access denied"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A service endpoint known by hostname only is resolved when dialed and
// reached directly.
func TestOutboundHostnameEndpoint(t *testing.T) {
	m := newMesh(t)
	a := wl("a", "127.0.0.90", "n1", state.TunnelHBONE)
	backend := echo(t, "127.0.0.91", "db")
	db := &state.Workload{UID: "db", Name: "db", Namespace: "default", Hostname: "db.example.internal", TrustDomain: "cluster.local", ServiceAccount: "default", Capacity: 1}
	svc := &state.Service{Name: "db", Namespace: "default", Hostname: "db.example.internal",
		Addresses: []state.NetworkAddr{{Addr: netip.MustParseAddr("127.0.0.200")}},
		Ports:     []state.PortMapping{{ServicePort: 5432, TargetPort: backend.Port()}}}
	db.Services = map[string][]state.PortMapping{svc.Key(): nil}
	m.set([]*state.Workload{a, db}, []*state.Service{svc}, nil)
	p := m.proxy("n1")
	var looked []string
	var mu sync.Mutex
	p.LookupHost = func(_ context.Context, host string) ([]netip.Addr, error) {
		mu.Lock()
		looked = append(looked, host)
		mu.Unlock()
		if host != "db.example.internal" {
			return nil, errors.New("no such host")
		}
		// The first address refuses; the second answers.
		return []netip.Addr{netip.MustParseAddr("127.0.0.92"), backend.Addr()}, nil
	}
	up, err := p.Resolve(a, netip.MustParseAddrPort("127.0.0.200:5432"))
	if err != nil || up.Host != "db.example.internal" || up.Port != backend.Port() || up.Tunnel {
		t.Fatalf("upstream = %+v, %v", up, err)
	}
	via, errs := capture(t, p, a, netip.MustParseAddrPort("127.0.0.200:5432"))
	if got, err := roundTrip(t, via, "q"); err != nil || got != "db:q" {
		t.Fatalf("got %q %v", got, err)
	}
	select {
	case err := <-errs:
		t.Errorf("outbound error: %v", err)
	default:
	}
	mu.Lock()
	defer mu.Unlock()
	if len(looked) != 1 {
		t.Errorf("lookups = %q", looked)
	}
}
