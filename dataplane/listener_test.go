package dataplane

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

func TestListenerUpdateKeepsOpenConnections(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("a", startBackend(t, lineEcho("a")))
	e.cluster("b", startBackend(t, lineEcho("b")))
	l := tcpListener("l", tcpChain("tcp", "a"))
	e.listener(l)
	addr := e.addr("l")
	old := dial(t, addr)
	roundTrip(t, old, "1", "a:1")

	// Same address, new chain: the socket stays, the config swaps.
	l2 := *l
	l2.FilterChains = []*state.FilterChain{tcpChain("tcp", "b")}
	e.listener(&l2)
	if got := e.addr("l"); got != addr {
		t.Fatalf("address changed on a config update: %s -> %s", addr, got)
	}
	roundTrip(t, old, "2", "a:2") // open connection keeps its config
	roundTrip(t, dial(t, addr), "3", "b:3")
	if st := e.srv.Stats()["l"]; st.Drained != 0 || st.Active != 2 {
		t.Fatalf("stats after in-place update = %+v, want 2 active, none drained", st)
	}
}

func TestListenerAddressChangeRebinds(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("a", startBackend(t, lineEcho("a")))
	l := tcpListener("l", tcpChain("tcp", "a"))
	l.Address = netip.MustParseAddrPort("127.0.0.2:0")
	e.listener(l)
	oldAddr := e.addr("l")
	old := dial(t, oldAddr)
	roundTrip(t, old, "1", "a:1")
	e.listener(tcpListener("l", tcpChain("tcp", "a")))
	newAddr := e.addr("l")
	if !strings.HasPrefix(newAddr, "127.0.0.1:") {
		t.Fatalf("new address %s", newAddr)
	}
	roundTrip(t, old, "2", "a:2") // draining, still served
	roundTrip(t, dial(t, newAddr), "3", "a:3")
	if _, err := net.DialTimeout("tcp", oldAddr, time.Second); err == nil {
		t.Fatal("old address still accepts")
	}
}

func TestListenerRemovalDrains(t *testing.T) {
	e := newEnv(t, Options{DrainTimeout: 5 * time.Second})
	e.cluster("a", startBackend(t, lineEcho("a")))
	e.listener(tcpListener("l", tcpChain("tcp", "a")))
	addr := e.addr("l")
	c := dial(t, addr)
	roundTrip(t, c, "1", "a:1")

	e.removeListener("l")
	if e.srv.Addr("l") != nil {
		t.Fatal("removed listener still has an address")
	}
	_, err := net.DialTimeout("tcp", addr, time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("new connection to a removed listener: err = %v, want connection refused", err)
	}
	roundTrip(t, c, "2", "a:2") // the open connection keeps working
	if st := e.srv.Stats()["l"]; st.Active != 1 {
		t.Fatalf("draining listener stats = %+v, want 1 active", st)
	}
	c.Close()
	// Once its last connection ends the listener is gone, stats included.
	eventually(t, "drain to finish", func() bool { _, ok := e.srv.Stats()["l"]; return !ok })
}

func TestDrainTimeoutClosesTCP(t *testing.T) {
	e := newEnv(t, Options{DrainTimeout: 300 * time.Millisecond})
	e.cluster("a", startBackend(t, lineEcho("a")))
	e.listener(tcpListener("l", tcpChain("tcp", "a")))
	c := dial(t, e.addr("l"))
	roundTrip(t, c, "1", "a:1")
	start := time.Now()
	e.removeListener("l")
	expectClosed(t, c, 3*time.Second)
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("closed after %v, before the drain timeout", d)
	}
}

func TestShutdownDrains(t *testing.T) {
	e := newEnv(t, Options{DrainTimeout: 200 * time.Millisecond})
	e.cluster("a", startBackend(t, lineEcho("a")))
	e.listener(tcpListener("l", tcpChain("tcp", "a")))
	addr := e.addr("l")
	c := dial(t, addr)
	roundTrip(t, c, "1", "a:1")
	done := make(chan error, 1)
	go func() { done <- e.srv.Shutdown(t.Context()) }()
	expectClosed(t, c, 3*time.Second)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("listener accepts after Shutdown")
	}
}

func TestOriginalDstHandoff(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("outer", startBackend(t, greet("outer|")))
	e.cluster("virtual", startBackend(t, greet("virtual|")))
	outer := tcpListener("outbound", tcpChain("own", "outer"))
	outer.UseOriginalDst = true
	e.listener(outer)
	addr := e.addr("outbound")
	roundTrip(t, dial(t, addr), "x", "outer|x") // no listener owns the destination

	// Without NAT the original destination is the local address, so a
	// virtual listener on exactly that address receives the connection.
	ap := netip.MustParseAddrPort(addr)
	e.listener(&state.Listener{Name: "virtual", Address: ap, BindToPort: false,
		FilterChains: []*state.FilterChain{tcpChain("v", "virtual")}})
	if e.srv.Addr("virtual") != nil {
		t.Fatal("a bind_to_port: false listener reports a bound address")
	}
	roundTrip(t, dial(t, addr), "y", "virtual|y")
	st := e.srv.Stats()
	if st["outbound"].HandedOff != 1 || st["virtual"].Accepted != 1 {
		t.Fatalf("stats = %+v, want one handoff outbound -> virtual", st)
	}

	// A wildcard virtual listener on the port catches it too.
	e.removeListener("virtual")
	e.listener(&state.Listener{Name: "wild", Address: netip.AddrPortFrom(netip.IPv4Unspecified(), ap.Port()),
		FilterChains: []*state.FilterChain{tcpChain("w", "virtual")}})
	roundTrip(t, dial(t, addr), "z", "virtual|z")
}

func TestBindFailureIsolated(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("a", startBackend(t, lineEcho("a")))
	busy, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// Without SO_REUSEPORT a second socket cannot listen on a port in use.
	taken := netip.MustParseAddrPort(busy.Addr().String())
	bad := tcpListener("bad", tcpChain("tcp", "a"))
	bad.Address = taken
	e.listener(bad)
	e.listener(tcpListener("good", tcpChain("tcp", "a")))
	if msg := e.srv.Errors()["bad"]; !strings.Contains(msg, "bind") {
		t.Fatalf("Errors()[bad] = %q, want a bind error", msg)
	}
	if _, ok := e.srv.Errors()["good"]; ok {
		t.Fatal("good listener has an error")
	}
	roundTrip(t, dial(t, e.addr("good")), "1", "a:1")

	// Freeing the port lets the next snapshot bind it.
	busy.Close()
	e.cluster("b", startBackend(t, lineEcho("b")))
	if e.srv.Addr("bad") == nil || len(e.srv.Errors()) != 0 {
		t.Fatalf("after the port was freed: addr %v errors %v", e.srv.Addr("bad"), e.srv.Errors())
	}
}

func TestBadConfigKeepsLastGood(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("a", startBackend(t, lineEcho("a")))
	l := tcpListener("l", tcpChain("tcp", "a"))
	e.listener(l)
	addr := e.addr("l")
	broken := *l
	broken.FilterChains = []*state.FilterChain{{Name: "bad", TCPProxy: &state.TCPProxy{Cluster: "a"},
		TLS: &state.DownstreamTLS{CertChainPEM: []byte("not pem")}}}
	e.listener(&broken)
	if msg := e.srv.Errors()["l"]; !strings.Contains(msg, `filter chain 0 ("bad")`) {
		t.Fatalf("Errors()[l] = %q", msg)
	}
	roundTrip(t, dial(t, addr), "1", "a:1")
	e.removeListener("l")
	if len(e.srv.Errors()) != 0 {
		t.Fatalf("errors of a removed listener kept: %v", e.srv.Errors())
	}
}
