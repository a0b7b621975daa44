package dataplane

import (
	"net"
	"sync"

	"github.com/meshlet/meshlet/dataplane/httpproxy"
	"github.com/meshlet/meshlet/policy"
)

// rbacConns holds a listener's open connections with what the network
// RBAC filters look at, so a policy change can re-check them and close
// those now denied (Istio's semantics; Envoy would drain the old chain).
type rbacConns struct {
	mu sync.Mutex
	m  map[*net.TCPConn]*rbacConn
}

type rbacConn struct {
	raw   *net.TCPConn
	facts connFacts
	// chain is the chain the connection is served by; it is used when the
	// current config no longer has a matching chain.
	chain *chainRuntime
	in    policy.RBACInput
}

// rbacAdmit registers c and evaluates the network RBAC filters of the
// chain that serves it under the listener's current config. It reports
// false (and counts) when the connection must be closed. Registering
// before reading the config means a concurrent update either is seen here
// or re-checks the registered connection.
func (l *listener) rbacAdmit(raw *net.TCPConn, chain *chainRuntime, facts *connFacts, info *httpproxy.ConnInfo) bool {
	rc := &rbacConn{raw: raw, facts: *facts, chain: chain, in: l4Input(facts, info)}
	l.rbac.mu.Lock()
	if l.rbac.m == nil {
		l.rbac.m = map[*net.TCPConn]*rbacConn{}
	}
	l.rbac.m[raw] = rc
	l.rbac.mu.Unlock()
	if !l.rbacAllows(l.cfg.Load(), rc, true) {
		l.rbacRelease(raw)
		return false
	}
	return true
}

// rbacRelease forgets a connection that ended.
func (l *listener) rbacRelease(raw *net.TCPConn) {
	l.rbac.mu.Lock()
	delete(l.rbac.m, raw)
	l.rbac.mu.Unlock()
}

// recheckRBAC re-evaluates every open connection against cfg (a new
// version of the listener) and closes the ones its network RBAC filters
// now deny. It runs on the config update path and does no I/O beyond
// closing sockets.
func (l *listener) recheckRBAC(cfg *listenerConfig) {
	l.rbac.mu.Lock()
	conns := make([]*rbacConn, 0, len(l.rbac.m))
	for _, rc := range l.rbac.m {
		conns = append(conns, rc)
	}
	l.rbac.mu.Unlock()
	for _, rc := range conns {
		if !l.rbacAllows(cfg, rc, false) {
			l.stats.rbacClosed.Add(1)
			_ = rc.raw.Close()
		}
	}
}

// rbacAllows evaluates the network RBAC filters of the chain cfg selects
// for rc, in order; all must allow. Shadow rules are only counted.
func (l *listener) rbacAllows(cfg *listenerConfig, rc *rbacConn, count bool) bool {
	chain := rc.chain
	if cfg != nil {
		if c := cfg.find(&rc.facts); c != nil {
			chain = c
		}
	}
	if chain == nil {
		return true
	}
	for _, f := range chain.spec.RBAC {
		if count && f.ShadowRules != nil && !policy.EvalRBAC(f.ShadowRules, &rc.in).Allowed {
			l.stats.rbacShadowDenied.Add(1)
		}
		res := policy.EvalRBAC(f.Rules, &rc.in)
		if count && res.Log {
			l.stats.rbacLogged.Add(1)
		}
		if !res.Allowed {
			if count {
				l.stats.rbacDenied.Add(1)
			}
			return false
		}
	}
	return true
}

// l4Input is the policy view of a connection: no request, so header and
// path rules never match.
func l4Input(facts *connFacts, info *httpproxy.ConnInfo) policy.RBACInput {
	in := policy.RBACInput{
		DirectRemote: facts.src,
		Remote:       facts.src,
		Local:        facts.dst,
		ServerName:   facts.sni,
	}
	if cs := info.TLS; cs != nil {
		in.TLS = true
		if cs.ServerName != "" {
			in.ServerName = cs.ServerName
		}
		if len(cs.PeerCertificates) > 0 {
			in.Peer = cs.PeerCertificates[0]
		}
	}
	return in
}
