package node

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/hbone"
	"github.com/meshlet/meshlet/state"
)

func TestResolve(t *testing.T) {
	m := newMesh(t)
	ip := netip.MustParseAddr
	svc := &state.Service{Name: "web", Namespace: "default", Hostname: "web.default.svc.cluster.local",
		Addresses: []state.NetworkAddr{{Addr: ip("10.96.0.1")}},
		Ports:     []state.PortMapping{{ServicePort: 80, TargetPort: 8080}}}
	a := wl("a", "10.0.0.1", "n1", state.TunnelHBONE)
	b := wl("b", "10.0.0.2", "n2", state.TunnelNone)
	sick := wl("sick", "10.0.0.3", "n1", state.TunnelHBONE)
	sick.Status = state.WorkloadUnhealthy
	other := wl("other-net", "10.0.0.4", "n1", state.TunnelHBONE)
	other.Network = "far"
	for _, w := range []*state.Workload{a, b, sick, other} {
		w.Services = map[string][]state.PortMapping{svc.Key(): nil}
	}
	b.Services[svc.Key()] = []state.PortMapping{{ServicePort: 80, TargetPort: 9090}}
	m.set([]*state.Workload{a, b, sick, other}, []*state.Service{svc}, nil)
	p := m.proxy("n1")
	p.TunnelAddr = defaultTunnelAddr

	// Round robin over the two usable endpoints, with b's port override.
	seen := map[netip.AddrPort]int{}
	for range 4 {
		up, err := p.Resolve(a, netip.MustParseAddrPort("10.96.0.1:80"))
		if err != nil {
			t.Fatal(err)
		}
		if up.Service != svc {
			t.Errorf("service not recorded: %+v", up)
		}
		seen[up.Addr]++
		if up.Workload == a && (!up.Tunnel || up.TunnelAddr != netip.MustParseAddrPort("10.0.0.1:15008") ||
			up.Identity != "spiffe://cluster.local/ns/default/sa/a") {
			t.Errorf("hbone upstream = %+v", up)
		}
		if up.Workload == b && up.Tunnel {
			t.Errorf("non-HBONE workload tunneled: %+v", up)
		}
	}
	want := map[netip.AddrPort]int{netip.MustParseAddrPort("10.0.0.1:8080"): 2, netip.MustParseAddrPort("10.0.0.2:9090"): 2}
	if len(seen) != 2 || seen[netip.MustParseAddrPort("10.0.0.1:8080")] != 2 || seen[netip.MustParseAddrPort("10.0.0.2:9090")] != 2 {
		t.Errorf("picks = %v, want %v", seen, want)
	}

	// A pod IP goes to that pod, port unchanged.
	up, err := p.Resolve(a, netip.MustParseAddrPort("10.0.0.2:7000"))
	if err != nil || up.Workload != b || up.Addr != netip.MustParseAddrPort("10.0.0.2:7000") || up.Tunnel {
		t.Errorf("pod ip: %+v %v", up, err)
	}
	// Unknown destinations pass through directly.
	up, err = p.Resolve(a, netip.MustParseAddrPort("192.0.2.1:443"))
	if err != nil || up.Workload != nil || up.Tunnel || up.Addr != netip.MustParseAddrPort("192.0.2.1:443") {
		t.Errorf("passthrough: %+v %v", up, err)
	}
	// A port the service does not expose has no route.
	if _, err := p.Resolve(a, netip.MustParseAddrPort("10.96.0.1:81")); !errors.Is(err, ErrNoRoute) {
		t.Errorf("port 81: err = %v, want ErrNoRoute", err)
	}
}

func TestResolveLoadBalancing(t *testing.T) {
	ip := netip.MustParseAddr
	mk := func(lb *state.LoadBalancing, ws ...*state.Workload) (*Proxy, *state.Service) {
		m := newMesh(t)
		svc := &state.Service{Name: "s", Namespace: "default", Hostname: "s.default.svc.cluster.local",
			Addresses: []state.NetworkAddr{{Addr: ip("10.96.0.2")}}, Ports: []state.PortMapping{{ServicePort: 80}},
			LoadBalancing: lb}
		for _, w := range ws {
			w.Services = map[string][]state.PortMapping{svc.Key(): nil}
		}
		m.set(ws, []*state.Service{svc}, nil)
		p := m.proxy("n1")
		p.TunnelAddr = defaultTunnelAddr
		return p, svc
	}
	src := wl("src", "10.0.1.1", "n1", state.TunnelHBONE)
	src.Locality = state.Locality{Region: "r1", Zone: "z1"}
	near := wl("near", "10.0.1.2", "n1", state.TunnelHBONE)
	near.Locality = src.Locality
	zone := wl("zone", "10.0.1.3", "n2", state.TunnelHBONE)
	zone.Locality = src.Locality
	far := wl("far", "10.0.1.4", "n3", state.TunnelHBONE)
	far.Locality = state.Locality{Region: "r2"}
	vip := netip.MustParseAddrPort("10.96.0.2:80")

	pick := func(p *Proxy) map[string]int {
		got := map[string]int{}
		for range 6 {
			up, err := p.Resolve(src, vip)
			if err != nil {
				got["error"]++
				continue
			}
			got[up.Workload.UID]++
		}
		return got
	}
	cases := []struct {
		name string
		lb   *state.LoadBalancing
		ws   []*state.Workload
		want map[string]int
	}{
		{"failover prefers same node", &state.LoadBalancing{Mode: state.LBModeFailover,
			RoutingPreference: []state.LBScope{state.LBScopeRegion, state.LBScopeZone, state.LBScopeNode}},
			[]*state.Workload{near, zone, far}, map[string]int{"near": 6}},
		{"failover falls back to zone", &state.LoadBalancing{Mode: state.LBModeFailover,
			RoutingPreference: []state.LBScope{state.LBScopeRegion, state.LBScopeZone, state.LBScopeNode}},
			[]*state.Workload{zone, far}, map[string]int{"zone": 6}},
		{"failover falls back to anything", &state.LoadBalancing{Mode: state.LBModeFailover,
			RoutingPreference: []state.LBScope{state.LBScopeRegion}},
			[]*state.Workload{far}, map[string]int{"far": 6}},
		{"strict keeps to the node", &state.LoadBalancing{Mode: state.LBModeStrict,
			RoutingPreference: []state.LBScope{state.LBScopeNode}},
			[]*state.Workload{near, zone, far}, map[string]int{"near": 6}},
		{"strict with no match fails", &state.LoadBalancing{Mode: state.LBModeStrict,
			RoutingPreference: []state.LBScope{state.LBScopeNode}},
			[]*state.Workload{zone, far}, map[string]int{"error": 6}},
		{"no preference round robins", nil, []*state.Workload{zone, far}, map[string]int{"zone": 3, "far": 3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, _ := mk(c.lb, c.ws...)
			got := pick(p)
			if len(got) != len(c.want) {
				t.Fatalf("picks = %v, want %v", got, c.want)
			}
			for k, v := range c.want {
				if got[k] != v {
					t.Fatalf("picks = %v, want %v", got, c.want)
				}
			}
		})
	}

	sick := wl("sick", "10.0.1.9", "n1", state.TunnelHBONE)
	sick.Status = state.WorkloadUnhealthy
	p, _ := mk(&state.LoadBalancing{AllowUnhealthy: true}, sick)
	if up, err := p.Resolve(src, vip); err != nil || up.Workload != sick {
		t.Errorf("ALLOW_ALL health policy: %+v %v", up, err)
	}
	p, _ = mk(&state.LoadBalancing{Mode: state.LBModePassthrough}, near)
	if up, err := p.Resolve(src, vip); err != nil || up.Workload != nil || up.Addr != vip {
		t.Errorf("PASSTHROUGH: %+v %v", up, err)
	}
}

// TestOutboundInbound runs real connections: a client "in" workload a
// reaches b (HBONE, another node) by pod IP and by service VIP, and c
// (no HBONE) directly; an Authorization DENY on b refuses a but not c.
func TestOutboundInbound(t *testing.T) {
	m := newMesh(t)
	a := wl("a", "127.0.0.11", "n1", state.TunnelHBONE)
	b := wl("b", "127.0.0.12", "n2", state.TunnelHBONE)
	c := wl("c", "127.0.0.13", "n2", state.TunnelNone)
	d := wl("d", "127.0.0.14", "n1", state.TunnelHBONE)
	bAddr := echo(t, "127.0.0.12", "b")
	cAddr := echo(t, "127.0.0.13", "c")
	svc := &state.Service{Name: "bsvc", Namespace: "default", Hostname: "bsvc.default.svc.cluster.local",
		Addresses: []state.NetworkAddr{{Addr: netip.MustParseAddr("127.0.0.100")}},
		Ports:     []state.PortMapping{{ServicePort: 80, TargetPort: bAddr.Port()}}}
	b.Services = map[string][]state.PortMapping{svc.Key(): nil}
	denyD := &state.Authorization{Name: "deny-d", Namespace: "default", Scope: state.AuthzNamespace, Action: state.AuthzDeny,
		Groups: []state.AuthzGroup{{Rules: []state.AuthzRule{{Matches: []state.AuthzMatch{{
			Principals: []state.AuthzString{{Kind: state.AuthzExact, Value: "cluster.local/ns/default/sa/d"}},
		}}}}}}}
	m.set([]*state.Workload{a, b, c, d}, []*state.Service{svc}, []*state.Authorization{denyD})

	n1, n2 := m.proxy("n1"), m.proxy("n2")
	m.serveInbound(n2, b)

	viaA, errsA := capture(t, n1, a, bAddr)
	if got, err := roundTrip(t, viaA, "hi"); err != nil || got != "b:hi" {
		t.Fatalf("a -> b pod ip over HBONE: %q %v", got, err)
	}
	viaSvc, _ := capture(t, n1, a, netip.MustParseAddrPort("127.0.0.100:80"))
	if got, err := roundTrip(t, viaSvc, "svc"); err != nil || got != "b:svc" {
		t.Fatalf("a -> bsvc VIP over HBONE: %q %v", got, err)
	}
	viaC, _ := capture(t, n1, a, cAddr)
	if got, err := roundTrip(t, viaC, "direct"); err != nil || got != "c:direct" {
		t.Fatalf("a -> c direct: %q %v", got, err)
	}
	if n := n2.Stats().Inbound.Load(); n != 2 {
		t.Errorf("n2 inbound = %d, want 2 (the direct call must not reach it)", n)
	}

	// d's identity is denied at b's node: the tunnel answers 403 and the
	// client sees its connection closed with nothing.
	viaD, errsD := capture(t, n1, d, bAddr)
	if got, _ := roundTrip(t, viaD, "x"); got != "" {
		t.Fatalf("denied call got %q", got)
	}
	// HandleOutbound closes the client's connection before it returns
	// the error, so the error may arrive just after the client saw EOF.
	select {
	case err := <-errsD:
		var se *hbone.StatusError
		if !errors.As(err, &se) || se.Code != 403 {
			t.Errorf("denied outbound error = %v, want hbone 403", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("denied outbound reported no error")
	}
	if n2.Stats().InboundDenied.Load() != 1 {
		t.Errorf("inbound denied = %d", n2.Stats().InboundDenied.Load())
	}
	select {
	case err := <-errsA:
		t.Errorf("allowed path reported %v", err)
	default:
	}
}

func TestInboundRefusesNonLocal(t *testing.T) {
	m := newMesh(t)
	b := wl("b", "127.0.0.21", "n2", state.TunnelHBONE)
	m.set([]*state.Workload{b}, nil, nil)
	p := m.proxy("n1")
	req := &hbone.Request{Target: netip.MustParseAddrPort("127.0.0.21:80"), Peer: hbone.Peer{ID: "spiffe://cluster.local/ns/default/sa/x"}, RemoteAddr: "127.0.0.1:5"}
	_, err := p.Inbound(context.Background(), req)
	if !errors.Is(err, ErrNotLocal) || !errors.Is(err, hbone.ErrTargetDenied) {
		t.Fatalf("err = %v, want ErrNotLocal and hbone.ErrTargetDenied", err)
	}
	req.Target = netip.MustParseAddrPort("127.0.0.99:80")
	if _, err := p.Inbound(context.Background(), req); !IsDenied(err) {
		t.Fatalf("unknown target: err = %v", err)
	}
}

func TestInboundAllowPolicyNeedsMatch(t *testing.T) {
	m := newMesh(t)
	b := wl("b", "127.0.0.31", "n1", state.TunnelHBONE)
	b.AuthorizationPolicies = []string{"default/allow-a"}
	bAddr := echo(t, "127.0.0.31", "b")
	allowA := &state.Authorization{Name: "allow-a", Namespace: "default", Scope: state.AuthzWorkloadSelector,
		Groups: []state.AuthzGroup{{Rules: []state.AuthzRule{{Matches: []state.AuthzMatch{{
			Principals: []state.AuthzString{{Kind: state.AuthzExact, Value: "cluster.local/ns/default/sa/a"}},
		}}}}}}}
	m.set([]*state.Workload{b}, nil, []*state.Authorization{allowA})
	p := m.proxy("n1")
	for _, c := range []struct {
		peer string
		ok   bool
	}{
		{"spiffe://cluster.local/ns/default/sa/a", true},
		{"spiffe://cluster.local/ns/default/sa/z", false},
	} {
		conn, err := p.Inbound(context.Background(), &hbone.Request{Target: bAddr, Peer: hbone.Peer{ID: c.peer}, RemoteAddr: "127.0.0.1:9"})
		if conn != nil {
			conn.Close()
		}
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrDenied)) {
			t.Errorf("peer %s: err = %v, want ok=%v", c.peer, err, c.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "no ALLOW policy matched") {
			t.Errorf("error does not say why: %v", err)
		}
	}
}

func TestIdentityCacheSharesAndForgets(t *testing.T) {
	m := newMesh(t)
	id, _ := parseWorkloadID("spiffe://cluster.local/ns/default/sa/a")
	s1, err := m.ids.Source(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := m.ids.Source(context.Background(), id)
	if s1 != s2 || m.ids.Len() != 1 {
		t.Fatalf("second request did not reuse the source")
	}
	cert, err := s1.Certificate()
	if err != nil || len(cert.Leaf.URIs) != 1 || cert.Leaf.URIs[0].String() != "spiffe://cluster.local/ns/default/sa/a" {
		t.Fatalf("certificate = %v %v", cert, err)
	}
	m.ids.Forget(id)
	if m.ids.Len() != 0 {
		t.Error("Forget kept the identity")
	}
	if _, err := parseWorkloadID("spiffe://cluster.local/ns//sa/a"); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("bad id: %v", err)
	}
}

// A plaintext client (outside the mesh) reaches a local workload through
// HandleInboundPlaintext unless a policy requires an identity.
func TestInboundPlaintext(t *testing.T) {
	m := newMesh(t)
	b := wl("b", "127.0.0.41", "n1", state.TunnelHBONE)
	bAddr := echo(t, "127.0.0.41", "b")
	p := m.proxy("n1")
	serve := func() string {
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
		return ln.Addr().String()
	}

	m.set([]*state.Workload{b}, nil, nil)
	if got, err := roundTrip(t, serve(), "open"); err != nil || got != "b:open" {
		t.Fatalf("no policy: %q %v", got, err)
	}
	needID := &state.Authorization{Name: "mtls-only", Namespace: "default", Scope: state.AuthzNamespace,
		Groups: []state.AuthzGroup{{Rules: []state.AuthzRule{{Matches: []state.AuthzMatch{{
			Principals: []state.AuthzString{{Kind: state.AuthzPresence}},
		}}}}}}}
	m.set([]*state.Workload{b}, nil, []*state.Authorization{needID})
	if got, _ := roundTrip(t, serve(), "closed"); got != "" {
		t.Fatalf("identity-requiring policy let a plaintext peer through: %q", got)
	}
	if p.Stats().InboundDenied.Load() != 1 {
		t.Errorf("denied = %d", p.Stats().InboundDenied.Load())
	}
}

// IdleTimeout ends a proxied connection nobody writes on.
func TestOutboundIdleTimeout(t *testing.T) {
	m := newMesh(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	silent := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			silent <- c
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		select {
		case c := <-silent:
			c.Close()
		default:
		}
	})
	p := m.proxy("n1")
	p.IdleTimeout = 100 * time.Millisecond
	via, _ := capture(t, p, nil, netip.MustParseAddrPort(ln.Addr().String()))
	c, err := net.Dial("tcp", via)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from a silent upstream")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("idle connection was not closed by the proxy")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v", d)
	}
}

func TestResolveWaypoint(t *testing.T) {
	m := newMesh(t)
	ip := netip.MustParseAddr
	wpSvc := &state.Service{Name: "waypoint", Namespace: "default", Hostname: "waypoint.default.svc.cluster.local",
		Addresses: []state.NetworkAddr{{Addr: ip("10.96.9.9")}}, Ports: []state.PortMapping{{ServicePort: 15008}}}
	wp := wl("wp", "10.0.9.1", "n2", state.TunnelHBONE)
	wp.ServiceAccount = "waypoint"
	wp.Services = map[string][]state.PortMapping{wpSvc.Key(): nil}
	svc := &state.Service{Name: "web", Namespace: "default", Hostname: "web.default.svc.cluster.local",
		Addresses: []state.NetworkAddr{{Addr: ip("10.96.0.1")}}, Ports: []state.PortMapping{{ServicePort: 80, TargetPort: 8080}},
		Waypoint: &state.GatewayAddress{Namespace: "default", Hostname: wpSvc.Hostname, HBONEPort: 15008}}
	web := wl("web", "10.0.0.5", "n3", state.TunnelHBONE)
	web.Services = map[string][]state.PortMapping{svc.Key(): nil}
	pod := wl("pod", "10.0.0.6", "n3", state.TunnelHBONE)
	pod.Waypoint = &state.GatewayAddress{Address: state.NetworkAddr{Addr: ip("10.96.9.9")}, HBONEPort: 15019}
	src := wl("src", "10.0.0.7", "n1", state.TunnelHBONE)
	m.set([]*state.Workload{wp, web, pod, src}, []*state.Service{wpSvc, svc}, nil)
	p := m.proxy("n1")
	p.TunnelAddr = nil // default: address:15008, gateway port honoured

	cases := []struct {
		name       string
		src        *state.Workload
		dst        string
		via        string // tunnel address
		identity   string
		authority  string
		throughWay bool
	}{
		{"service through its waypoint", src, "10.96.0.1:80", "10.0.9.1:15008", "spiffe://cluster.local/ns/default/sa/waypoint", "10.96.0.1:80", true},
		{"pod through its waypoint (by VIP, own port)", src, "10.0.0.6:9000", "10.0.9.1:15019", "spiffe://cluster.local/ns/default/sa/waypoint", "10.0.0.6:9000", true},
		{"the waypoint itself goes to the endpoint", wp, "10.96.0.1:80", "10.0.0.5:15008", "spiffe://cluster.local/ns/default/sa/web", "10.0.0.5:8080", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			up, err := p.Resolve(c.src, netip.MustParseAddrPort(c.dst))
			if err != nil {
				t.Fatal(err)
			}
			if !up.Tunnel || up.TunnelAddr.String() != c.via || up.Identity != c.identity || up.Addr.String() != c.authority ||
				(up.Waypoint != nil) != c.throughWay {
				t.Errorf("upstream = %+v", up)
			}
		})
	}
	if _, err := p.Resolve(src, netip.MustParseAddrPort("10.96.0.1:81")); !errors.Is(err, ErrNoRoute) {
		t.Errorf("unknown service port through waypoint: %v", err)
	}
}

// A pod's HBONE server delivers to that pod only.
func TestInboundServerOwnPodOnly(t *testing.T) {
	m := newMesh(t)
	a := wl("a", "127.0.0.61", "n1", state.TunnelHBONE)
	b := wl("b", "127.0.0.62", "n1", state.TunnelHBONE)
	c := wl("c", "127.0.0.63", "n1", state.TunnelHBONE)
	bAddr := echo(t, "127.0.0.62", "b")
	cAddr := echo(t, "127.0.0.63", "c")
	m.set([]*state.Workload{a, b, c}, nil, nil)
	n1 := m.proxy("n1")
	m.serveInbound(n1, b)
	up := &Upstream{Tunnel: true, Identity: b.Identity()}
	up.TunnelAddr, _ = m.tunnelAddr(b)
	for _, tc := range []struct {
		target netip.AddrPort
		want   string
	}{{bAddr, "b:x"}, {cAddr, ""}} {
		up.Addr = tc.target
		conn, err := n1.DialUpstream(context.Background(), a, up)
		if tc.want == "" {
			var se *hbone.StatusError
			if !errors.As(err, &se) || se.Code != 403 {
				t.Errorf("CONNECT %s via b's server: err = %v, want 403", tc.target, err)
			}
			if conn != nil {
				conn.Close()
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		conn.Write([]byte("x"))
		conn.(interface{ CloseWrite() error }).CloseWrite()
		buf := make([]byte, 16)
		n, _ := io.ReadFull(conn, buf[:3])
		conn.Close()
		if string(buf[:n]) != tc.want {
			t.Errorf("got %q, want %q", buf[:n], tc.want)
		}
	}
}
