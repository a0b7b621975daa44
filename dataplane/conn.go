package dataplane

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"runtime/debug"

	"github.com/meshlet/meshlet/dataplane/httpproxy"
)

// handle runs in its own goroutine for each accepted connection: it finds
// the listener that serves it (use_original_dst) and serves it there.
func (s *Server) handle(l *listener, c *net.TCPConn) {
	defer s.wg.Done()
	defer func() {
		// A bug in one connection's path must not take the process down.
		if r := recover(); r != nil {
			_ = c.Close()
			s.log.Error("connection handler panicked", "listener", l.name, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	if !s.admitGlobal() {
		l.stats.globalLimited.Add(1)
		_ = c.Close()
		return
	}
	defer s.releaseGlobal()
	_ = c.SetNoDelay(true)
	local := canonAddrPort(c.LocalAddr().(*net.TCPAddr).AddrPort())
	remote := canonAddrPort(c.RemoteAddr().(*net.TCPAddr).AddrPort())
	dst := local
	target := l
	if spec := l.cfg.Load().spec; spec.UseOriginalDst || spec.OriginalDstFilter {
		if od, err := originalDst(c, local); err == nil {
			dst = canonAddrPort(od)
		}
		if spec.UseOriginalDst {
			target = s.lookupListener(dst, l)
			if target != l {
				l.stats.handedOff.Add(1)
			}
		}
	}
	target.serve(c, local, remote, dst)
}

// serve runs one connection on l's current config until it ends.
func (l *listener) serve(raw *net.TCPConn, local, remote, dst netip.AddrPort) {
	l.serveAfter(raw, nil, local, remote, dst)
}

// serveAfter is serve for a connection whose first bytes, pre, were already
// read from raw (HandleAs); they are seen first by the listener filters and
// the chain.
func (l *listener) serveAfter(raw *net.TCPConn, pre []byte, local, remote, dst netip.AddrPort) {
	if !l.track(raw) {
		_ = raw.Close()
		return
	}
	defer l.untrack(raw)
	defer raw.Close()

	cfg := l.cfg.Load()
	facts := connFacts{dst: dst, src: remote, transport: transportRaw}
	var conn net.Conn = raw
	if len(pre) > 0 {
		conn = &replayConn{TCPConn: raw, buf: pre}
	}
	if cfg.needPeek {
		buf, res, timedOut, err := peekAfter(raw, pre, cfg.peekTimeout)
		if err != nil || (timedOut && !cfg.spec.ContinueOnListenerFiltersTimeout) {
			l.stats.noChain.Add(1)
			return
		}
		facts.sni, facts.transport, facts.alpn = res.sni, res.transport, res.alpn
		if len(buf) > 0 {
			conn = &replayConn{TCPConn: raw, buf: buf}
		}
	}
	chain := cfg.find(&facts)
	if chain == nil {
		l.stats.noChain.Add(1)
		if facts.transport == transportRaw && cfg.tlsOnly {
			// STRICT mTLS: only TLS chains exist, plaintext is refused.
			l.stats.plaintextRejected.Add(1)
		}
		return
	}
	if !chain.admit() {
		l.stats.rateLimited.Add(1)
		return
	}
	if cl := chain.acquireConns(); cl != nil {
		l.refuseOverLimit(conn, cl)
		return
	}
	defer chain.releaseConns()
	info := &httpproxy.ConnInfo{
		Remote:      remote,
		Local:       local,
		OriginalDst: dst,
		Listener:    l.name,
		FilterChain: chain.spec.Name,
	}
	if chain.tls != nil {
		tc := tls.Server(conn, chain.tls)
		// Bound the handshake like the listener filters so a silent client
		// cannot hold the connection forever.
		hsTimeout := cfg.peekTimeout
		if hsTimeout < 0 { // listener filters unbounded: still bound the handshake
			hsTimeout = defaultListenerFiltersTimeout
		}
		ctx, cancel := context.WithTimeout(l.hard, hsTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			l.stats.tlsFailed.Add(1)
			return
		}
		st := tc.ConnectionState()
		info.TLS = &st
		info.PeerID = peerID(&st)
		if len(st.PeerCertificates) > 0 && needsLocalURIs(chain.spec.HTTP) {
			info.LocalURISANs = chain.local.get(chain.tls)
		}
		conn = tc
	}
	if !l.rbacAdmit(raw, chain, &facts, info) {
		return
	}
	defer l.rbacRelease(raw)
	switch {
	case chain.spec.TCPProxy != nil:
		l.serveTCP(conn, chain, info)
	case chain.spec.HTTP != nil && l.s.http != nil:
		l.s.http.ServeConn(l.ctx, conn, chain.spec.HTTP, info)
	}
}
