package dataplane

import (
	"net/netip"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

func l4Rules(action state.RBACAction, perm state.Permission, pr state.Principal) []*state.NetworkRBAC {
	return []*state.NetworkRBAC{{StatPrefix: "tcp.", Rules: &state.RBACRules{Action: action, Policies: []state.RBACPolicy{{
		Name: "p", Permissions: []state.Permission{perm}, Principals: []state.Principal{pr}}}}}}
}

var (
	fromLoopback = state.Principal{Kind: state.PrincipalDirectRemoteIP, CIDR: netip.MustParsePrefix("127.0.0.0/8")}
	anyPerm      = state.Permission{Kind: state.PermAny}
)

// TestNetworkRBAC: a DENY on the client's address closes the connection
// before any byte reaches the backend; an ALLOW admits it; a LOG policy
// admits and counts.
func TestNetworkRBAC(t *testing.T) {
	for _, tc := range []struct {
		name   string
		rbac   []*state.NetworkRBAC
		admit  bool
		logged uint64
	}{
		{"deny source", l4Rules(state.RBACDeny, anyPerm, fromLoopback), false, 0},
		{"allow source", l4Rules(state.RBACAllow, anyPerm, fromLoopback), true, 0},
		{"allow other port only", l4Rules(state.RBACAllow, state.Permission{Kind: state.PermDestinationPort, Port: 1}, fromLoopback), false, 0},
		{"log", l4Rules(state.RBACLog, anyPerm, fromLoopback), true, 1},
		{"second filter denies", append(l4Rules(state.RBACAllow, anyPerm, fromLoopback),
			l4Rules(state.RBACDeny, anyPerm, state.Principal{Kind: state.PrincipalAny})...), false, 0},
		{"shadow only", []*state.NetworkRBAC{{StatPrefix: "s", ShadowRules: &state.RBACRules{Action: state.RBACAllow}}}, true, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			e.cluster("be", startBackend(t, lineEcho("be")))
			chain := tcpChain("tcp", "be")
			chain.RBAC = tc.rbac
			e.listener(tcpListener("l", chain))
			c := dial(t, e.addr("l"))
			if tc.admit {
				roundTrip(t, c, "hi\n", "be:hi\n")
			} else {
				_, _ = c.Write([]byte("hi\n"))
				expectClosed(t, c, 2*time.Second)
			}
			st := e.srv.Stats()["l"]
			if wantDenied := map[bool]uint64{true: 0, false: 1}[tc.admit]; st.RBACDenied != wantDenied || st.RBACLogged != tc.logged {
				t.Fatalf("stats = %+v", st)
			}
		})
	}
}

// TestNetworkRBACRecheck: a policy change closes an open connection that
// the new policy denies within a second, and leaves allowed ones open.
func TestNetworkRBACRecheck(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("be", startBackend(t, lineEcho("be")))
	// Same spec address each time, so the update swaps the config of the
	// bound socket instead of rebinding.
	mk := func(rbac []*state.NetworkRBAC) *state.Listener {
		chain := tcpChain("tcp", "be")
		chain.RBAC = rbac
		return tcpListener("l", chain)
	}
	e.listener(mk(nil))
	addr := e.addr("l")
	bound := netip.MustParseAddrPort(addr)
	c := dial(t, addr)
	roundTrip(t, c, "a\n", "be:a\n")

	// A policy that still allows the connection keeps it.
	e.listener(mk(l4Rules(state.RBACAllow, anyPerm, fromLoopback)))
	roundTrip(t, c, "b\n", "be:b\n")

	start := time.Now()
	e.listener(mk(l4Rules(state.RBACDeny, state.Permission{Kind: state.PermDestinationPort, Port: uint32(bound.Port())}, fromLoopback)))
	expectClosed(t, c, time.Second)
	if d := time.Since(start); d > time.Second {
		t.Fatalf("closed after %v", d)
	}
	if st := e.srv.Stats()["l"]; st.RBACClosed != 1 {
		t.Fatalf("RBACClosed = %d, want 1", st.RBACClosed)
	}
	// New connections are refused too.
	c2 := dial(t, addr)
	_, _ = c2.Write([]byte("x\n"))
	expectClosed(t, c2, 2*time.Second)
}

// TestNetworkRBACPrincipal: the authenticated principal comes from the
// verified client certificate of a TLS-terminating chain.
func TestNetworkRBACPrincipal(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("be", startBackend(t, greet("be:")))
	front := newCert(t, "front.test")
	alice := newCert(t, "alice.test")
	bob := newCert(t, "bob.test")
	pool := append(append([]byte(nil), alice.certPEM...), bob.certPEM...)
	chain := tcpChain("tls", "be")
	chain.TLS = &state.DownstreamTLS{CertChainPEM: front.certPEM, KeyPEM: front.keyPEM,
		ClientCAPEM: pool, RequireClientCert: true}
	chain.RBAC = l4Rules(state.RBACAllow, anyPerm, state.Principal{Kind: state.PrincipalAuthenticated,
		Name: &state.StringMatcher{Kind: state.StringExact, Value: "alice.test"}})
	e.listener(tcpListener("l", chain))
	addr := e.addr("l")

	c := tlsDial(t, addr, &tlsClientCfg{serverName: "front.test", roots: front, clientCert: alice})
	roundTrip(t, c, "hi", "be:hi")

	c = tlsDial(t, addr, &tlsClientCfg{serverName: "front.test", roots: front, clientCert: bob})
	_, _ = c.Write([]byte("hi"))
	expectClosed(t, c, 2*time.Second)
}
