package dataplane

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshlet/meshlet/dataplane/httpproxy"
	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/lb"
)

// DefaultGatewayAddr is Istio's SNI gateway port (AUTO_PASSTHROUGH and
// east-west gateways listen there).
const DefaultGatewayAddr = "0.0.0.0:15443"

// GatewayOptions configure an SNI gateway (Server.StartGateway).
type GatewayOptions struct {
	// Addr is the listening address, e.g. DefaultGatewayAddr.
	Addr string
	// Hosts maps plain server names to cluster names: "api.example.com"
	// exactly, or "*.example.com" for any name below example.com (the
	// most specific entry wins). Names in Istio's outbound_ form and names
	// equal to a cluster's need no entry.
	Hosts map[string]string
	// Terminate, when set, is the gateway's mesh identity: a connection
	// routed to an HBONE-tunneled cluster (state.Cluster.HBONE) is then
	// terminated here (mTLS; the client must present a certificate the
	// identity's roots verify) and its plaintext re-originated through the
	// cluster, that is over HBONE. Without it, and for every other
	// cluster, bytes pass through untouched (inside the tunnel for HBONE
	// clusters).
	Terminate identity.Source
	// PeekTimeout bounds the wait for the ClientHello (default 15 s, Envoy's
	// listener_filters_timeout); IdleTimeout closes a connection after that
	// long without bytes either way (default 1 h, tcp_proxy's; negative
	// disables).
	PeekTimeout, IdleTimeout time.Duration
	// Listener, when set, is served instead of binding Addr: the gateway
	// socket inherited from the process this one upgrades.
	Listener *net.TCPListener
}

// GatewayStats are the gateway's connection counters.
type GatewayStats struct {
	Accepted uint64
	Active   int64
	// Routed counts connections spliced (or terminated and tunneled) to a
	// host; Terminated is the part of them terminated here.
	Routed, Terminated uint64
	// NotTLS counts connections whose first bytes were not a TLS
	// ClientHello (or none arrived in time); NoSNI those without a server
	// name; UnknownSNI those whose name no cluster or host entry claims.
	NotTLS, NoSNI, UnknownSNI uint64
	// Envoy's tcp_proxy failures: NC (the routed cluster does not exist),
	// UH (no healthy host), UF (connect failed), UO (circuit breaker), and
	// failed handshakes of terminated connections.
	NoCluster, NoHealthyUpstream, UpstreamConnectFailure, Overflow, TLSHandshakeFailed uint64
	// GlobalLimited counts connections closed at accept because the data
	// plane's Options.MaxConnections were open (the gateway shares it).
	GlobalLimited uint64
}

type gatewayCounters struct {
	accepted, routed, terminated         atomic.Uint64
	notTLS, noSNI, unknownSNI, noCluster atomic.Uint64
	noHealthy, connectFail, overflow     atomic.Uint64
	tlsFailed, globalLimited             atomic.Uint64
	active                               atomic.Int64
}

// Gateway is a running SNI gateway: it reads the ClientHello's server name
// without terminating TLS, picks a cluster and host from the current
// snapshot, and splices the connection (replaying the peeked bytes) so the
// backend's certificate reaches the client untouched.
type Gateway struct {
	s         *Server
	name      string // gateway_PORT: the listener name in stats and telemetry
	ln        *net.TCPListener
	hosts     map[string]string
	terminate *tls.Config // nil: always passthrough
	peek      time.Duration
	idle      time.Duration
	stats     gatewayCounters

	hard       context.Context // cancelled when connections are closed by force
	hardCancel context.CancelFunc
	wg         sync.WaitGroup

	mu       sync.Mutex
	conns    map[*net.TCPConn]struct{}
	closed   bool
	lastWarn time.Time // unknown-SNI log rate limit
	muted    int       // unknown-SNI lines suppressed since lastWarn
}

// StartGateway binds opts.Addr and serves the SNI gateway from s's store
// and clusters until Close.
func (s *Server) StartGateway(opts GatewayOptions) (*Gateway, error) {
	if s.clusters == nil {
		return nil, errors.New("gateway: the data plane has no cluster manager")
	}
	addr := opts.Addr
	if addr == "" {
		addr = DefaultGatewayAddr
	}
	hosts := make(map[string]string, len(opts.Hosts))
	for name, c := range opts.Hosts {
		if name == "" || c == "" {
			return nil, fmt.Errorf("gateway: host %q -> cluster %q: both must be set", name, c)
		}
		hosts[lowerASCII(name)] = c
	}
	g := &Gateway{s: s, hosts: hosts, peek: opts.PeekTimeout, idle: opts.IdleTimeout, conns: map[*net.TCPConn]struct{}{}}
	if g.peek == 0 {
		g.peek = defaultListenerFiltersTimeout
	}
	if g.idle == 0 {
		g.idle = time.Hour
	}
	if opts.Terminate != nil {
		g.terminate = identity.ServerConfig(opts.Terminate, nil)
	}
	if opts.Listener != nil {
		g.ln = opts.Listener
	} else {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("gateway: listen %s: %w", addr, err)
		}
		g.ln = ln.(*net.TCPListener)
	}
	g.name = fmt.Sprintf("gateway_%d", g.ln.Addr().(*net.TCPAddr).Port)
	s.gateways.add(g)
	g.hard, g.hardCancel = context.WithCancel(context.Background())
	g.wg.Add(1)
	go g.acceptLoop()
	s.log.Info("sni gateway listening", "name", g.name, "addr", g.ln.Addr().String(), "hosts", len(hosts), "terminate_hbone", g.terminate != nil)
	return g, nil
}

// Addr is the bound address.
func (g *Gateway) Addr() net.Addr { return g.ln.Addr() }

// Stats returns the counters.
func (g *Gateway) Stats() GatewayStats {
	c := &g.stats
	return GatewayStats{
		Accepted: c.accepted.Load(), Active: c.active.Load(),
		Routed: c.routed.Load(), Terminated: c.terminated.Load(),
		NotTLS: c.notTLS.Load(), NoSNI: c.noSNI.Load(), UnknownSNI: c.unknownSNI.Load(),
		NoCluster: c.noCluster.Load(), NoHealthyUpstream: c.noHealthy.Load(),
		UpstreamConnectFailure: c.connectFail.Load(), Overflow: c.overflow.Load(),
		TLSHandshakeFailed: c.tlsFailed.Load(), GlobalLimited: c.globalLimited.Load(),
	}
}

// Close stops accepting and lets open connections finish until ctx ends;
// then it closes them and returns ctx's error. It returns once every
// goroutine of the gateway has ended.
func (g *Gateway) Close(ctx context.Context) error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	_ = g.ln.Close()
	done := make(chan struct{})
	go func() {
		g.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		g.hardCancel()
		g.mu.Lock()
		for c := range g.conns {
			_ = c.Close()
		}
		g.mu.Unlock()
		<-done
	}
	g.hardCancel()
	g.s.gateways.remove(g)
	return err
}

func (g *Gateway) acceptLoop() {
	defer g.wg.Done()
	var delay time.Duration
	for {
		c, err := g.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			g.s.log.Warn("gateway accept failed; retrying", "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !g.track(c) {
			_ = c.Close()
			continue
		}
		g.wg.Add(1)
		go g.handle(c)
	}
}

func (g *Gateway) track(c *net.TCPConn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.conns[c] = struct{}{}
	g.stats.accepted.Add(1)
	g.stats.active.Add(1)
	return true
}

func (g *Gateway) untrack(c *net.TCPConn) {
	g.mu.Lock()
	delete(g.conns, c)
	g.mu.Unlock()
	g.stats.active.Add(-1)
}

// handle serves one connection: peek, route, dial, splice.
func (g *Gateway) handle(c *net.TCPConn) {
	defer g.wg.Done()
	defer g.untrack(c)
	defer c.Close()
	defer func() {
		if r := recover(); r != nil {
			g.s.log.Error("gateway connection handler panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	if !g.s.admitGlobal() {
		g.stats.globalLimited.Add(1)
		return
	}
	defer g.s.releaseGlobal()
	_ = c.SetNoDelay(true)
	buf, res, timedOut, err := peekAfter(c, nil, g.peek)
	if err != nil || timedOut || res.transport != transportTLS {
		g.stats.notTLS.Add(1)
		return
	}
	if res.sni == "" {
		g.stats.noSNI.Add(1)
		return
	}
	route, ok := routeSNI(res.sni, g.s.store.Load(), g.hosts)
	if !ok {
		g.stats.unknownSNI.Add(1)
		g.warnUnknown(res.sni, c.RemoteAddr())
		return
	}
	local := canonAddrPort(c.LocalAddr().(*net.TCPAddr).AddrPort())
	info := &httpproxy.ConnInfo{
		Remote:      canonAddrPort(c.RemoteAddr().(*net.TCPAddr).AddrPort()),
		Local:       local,
		OriginalDst: local,
		Listener:    g.name,
		FilterChain: route.how,
	}
	g.forward(&replayConn{TCPConn: c, buf: buf}, route, info)
}

// forward connects down to a host of route's cluster and copies both ways.
func (g *Gateway) forward(down net.Conn, route gatewayRoute, info *httpproxy.ConnInfo) {
	cl := g.s.clusters.Cluster(route.cluster)
	terminate := g.terminate != nil && cl != nil && cl.Spec().HBONE != nil
	if terminate {
		// Terminate first so the telemetry record carries the peer.
		tc := tls.Server(down, g.terminate)
		hs := g.peek
		if hs < 0 { // the ClientHello wait is unbounded; the handshake is not
			hs = defaultListenerFiltersTimeout
		}
		ctx, cancel := context.WithTimeout(g.hard, hs)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			g.stats.tlsFailed.Add(1)
			return
		}
		st := tc.ConnectionState()
		info.TLS = &st
		info.PeerID = peerID(&st)
		down = tc
	}
	rec := g.s.tcpRecord(info, nil)
	defer rec.finish()
	rec.cluster(route.cluster)
	if cl == nil {
		g.stats.noCluster.Add(1)
		rec.fail(httpproxy.FlagNoCluster)
		return
	}
	release, ok := cl.Acquire(upstream.ResourceConnections)
	if !ok {
		g.stats.overflow.Add(1)
		rec.fail("UO")
		return
	}
	defer release()
	h, err := cl.Pick(&lb.PickInfo{})
	if err != nil {
		g.stats.noHealthy.Add(1)
		rec.fail(httpproxy.FlagNoHealthyUpstream)
		return
	}
	h.Acquire()
	defer h.Release()
	var up net.Conn
	if terminate {
		up, err = cl.Dial(g.hard, h)
	} else {
		up, err = cl.DialPassthrough(g.hard, h)
	}
	if err != nil {
		g.stats.connectFail.Add(1)
		cl.ReportLocal(h, upstream.ConnectFailure)
		rec.fail(httpproxy.FlagUpstreamConnFailure)
		return
	}
	cl.ReportConnected(h)
	rec.connected(h.Address)
	g.stats.routed.Add(1)
	if terminate {
		g.stats.terminated.Add(1)
	}
	defer up.Close()
	rec.bytes(pipe(down, up, max(g.idle, 0)))
}

// warnUnknown logs a refused server name, at most once a second so a
// client cycling names cannot flood the log; the counter has them all.
func (g *Gateway) warnUnknown(sni string, remote net.Addr) {
	g.mu.Lock()
	now := time.Now()
	if now.Sub(g.lastWarn) < time.Second {
		g.muted++
		g.mu.Unlock()
		return
	}
	muted := g.muted
	g.lastWarn, g.muted = now, 0
	g.mu.Unlock()
	g.s.log.LogAttrs(context.Background(), slog.LevelWarn, "sni gateway: unknown server name; connection closed",
		slog.String("sni", sni), slog.String("remote", remote.String()), slog.Int("suppressed", muted))
}

// lowerASCII lower-cases a configured host name the way the inspector
// lower-cases the ClientHello's.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// gatewaySet holds a Server's running gateways so that Server.Stats shows
// each as a listener named gateway_PORT, with the counters an xDS-configured
// SNI gateway would have: a refused server name is a filter chain miss.
type gatewaySet struct {
	mu sync.Mutex
	m  map[*Gateway]struct{}
}

func (gs *gatewaySet) add(g *Gateway) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	if gs.m == nil {
		gs.m = map[*Gateway]struct{}{}
	}
	gs.m[g] = struct{}{}
}

func (gs *gatewaySet) remove(g *Gateway) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	delete(gs.m, g)
}

func (gs *gatewaySet) addStats(out map[string]ListenerStats) {
	gs.mu.Lock()
	defer gs.mu.Unlock()
	for g := range gs.m {
		st := g.Stats()
		out[g.name] = ListenerStats{
			Accepted:               st.Accepted,
			Active:                 st.Active,
			NoFilterChain:          st.NotTLS + st.NoSNI + st.UnknownSNI,
			NoCluster:              st.NoCluster,
			NoHealthyUpstream:      st.NoHealthyUpstream,
			UpstreamConnectFailure: st.UpstreamConnectFailure,
			TLSHandshakeFailed:     st.TLSHandshakeFailed,
			GlobalLimited:          st.GlobalLimited,
		}
	}
}

// ListenerFile duplicates the gateway's listening socket, for a successor
// process to serve the same port during an upgrade.
func (g *Gateway) ListenerFile() (*os.File, error) { return g.ln.File() }
