package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/meshlet/meshlet/capture"
	"github.com/meshlet/meshlet/hbone"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/inpod"
	"github.com/meshlet/meshlet/node"
	"github.com/meshlet/meshlet/state"
)

// inpodOptions are run's in-pod (ambient node) flags: serve the pods a node
// agent hands over on a Unix socket, from inside each pod's netns, with the
// node proxy (node package) routing their traffic by the Workload API.
type inpodOptions struct {
	mode     flag.Value // --mode, shared with the launcher (launch.go)
	socket   string
	connect  bool
	capture  string
	inbound  string
	forward  bool
	nodeName string
	network  string
	drain    time.Duration
	origSrc  bool
}

// modeNode is --mode's value for ambient node mode: in-pod mode on
// ztunnel's default socket.
const modeNode = "node"

// nodeModeValue is --mode when this file registers it first.
type nodeModeValue struct{ s string }

func (m *nodeModeValue) String() string     { return m.s }
func (m *nodeModeValue) Set(s string) error { m.s = s; return nil }

func (o *inpodOptions) register(fs *flag.FlagSet, getenv func(string) string) {
	// --mode is shared with the launcher: whoever registers it first owns
	// the flag, the other reads its value.
	if f := fs.Lookup("mode"); f != nil {
		o.mode = f.Value
	} else {
		mv := &nodeModeValue{}
		fs.Var(mv, "mode", `"node": ambient node proxy serving the node's pods in-pod (--inpod-socket defaults to `+inpod.DefaultSocketPath+`); "sidecar" or "whitebox" with "-- APP ARGS": launch an application (see the launcher); "" none of these`)
		o.mode = mv
	}
	fs.StringVar(&o.socket, "inpod-socket", "", "in-pod mode: the node agent's Unix SEQPACKET socket (ztunnel's is "+inpod.DefaultSocketPath+`); "" disables in-pod mode`)
	fs.BoolVar(&o.connect, "inpod-connect", false, "connect to --inpod-socket served by the node agent (istio-cni's ZDS server, as ztunnel does) instead of serving it")
	fs.StringVar(&o.capture, "inpod-capture", capture.BackendIPTables, "redirection programmed in each pod's netns: iptables, iptables-legacy, iptables-nft, nftables, or none when the node agent programs it")
	fs.StringVar(&o.inbound, "inpod-inbound", "redirect", "inbound plaintext capture to 15006 in each pod: redirect or tproxy")
	fs.BoolVar(&o.forward, "inpod-forward", false, "in-pod mode without the Workload API: forward captured connections to their original destination (no HBONE, no policy)")
	fs.StringVar(&o.nodeName, "node-name", getenv("NODE_NAME"), "this node's name as workloads carry it; inbound HBONE is accepted only for its workloads (default $NODE_NAME; empty accepts any)")
	fs.StringVar(&o.network, "network", getenv("NETWORK"), "this node's network for workload address lookups (default $NETWORK)")
	fs.DurationVar(&o.drain, "inpod-drain-time", 10*time.Second, "how long a deleted pod's open connections may finish")
	fs.BoolVar(&o.origSrc, "inpod-original-source", true, "deliver inbound connections to a pod from the client's address (IP_TRANSPARENT inside the pod, with a return route for its replies), as ztunnel does; false delivers from the pod's own address")
}

// inpodRuntime is in-pod mode running; nil when off.
type inpodRuntime struct {
	srv     *inpod.Server
	px      *node.Proxy   // nil with --inpod-forward
	hbone   *hbone.Client // ours (the proxy closes only one it made)
	handler *nodeHandler
	ids     *node.Cache
	closeCA func()
	cancel  context.CancelFunc
	done    chan struct{} // Connect loop ended
}

// resolve applies --mode node's default socket and checks the flags; on
// reports whether in-pod mode is enabled.
func (o *inpodOptions) resolve() (_ capture.Config, on bool, _ error) {
	cfg := capture.Config{DisableDNS: true}
	if o == nil {
		return cfg, false, nil
	}
	if o.mode != nil {
		// The launcher checks its own modes only when it registered the
		// flag; whoever owns it, an unknown mode is an error.
		switch m := o.mode.String(); m {
		case "", modeNode, modeSidecar, modeWhitebox:
		default:
			return cfg, false, fmt.Errorf("--mode %q: want node, sidecar or whitebox", m)
		}
		if o.mode.String() == modeNode && o.socket == "" {
			o.socket = inpod.DefaultSocketPath
		}
	}
	if o.socket == "" {
		return cfg, false, nil
	}
	switch o.inbound {
	case "redirect":
		cfg.Inbound = capture.InboundRedirect
	case "tproxy":
		cfg.Inbound = capture.InboundTProxy
	default:
		return cfg, false, fmt.Errorf("--inpod-inbound %q: want redirect or tproxy", o.inbound)
	}
	switch o.capture {
	case capture.BackendIPTables, capture.BackendIPTablesLegacy, capture.BackendIPTablesNFT, capture.BackendNFTables, capture.BackendNone:
	default:
		return cfg, false, fmt.Errorf("--inpod-capture %q: want iptables, iptables-legacy, iptables-nft, nftables or none", o.capture)
	}
	if o.drain <= 0 {
		return cfg, false, errors.New("--inpod-drain-time must be positive")
	}
	return cfg, true, nil
}

// startInpod starts in-pod mode on p's store. Call after the proxy is
// running: pods are served as soon as the agent hands them over.
func startInpod(o *inpodOptions, ido *identityOptions, p *proxy, log *slog.Logger) (*inpodRuntime, error) {
	cfg, on, err := o.resolve()
	if err != nil || !on {
		return nil, err
	}
	rt := &inpodRuntime{done: make(chan struct{})}
	var h inpod.Handler
	if o.forward {
		h = &inpod.Forwarder{Log: log}
	} else {
		ids, closeCA, err := nodeIdentities(ido, log)
		if err != nil {
			return nil, err
		}
		rt.ids, rt.closeCA = ids, closeCA
		rt.px = &node.Proxy{
			Store: p.store, NodeName: o.nodeName, Network: o.network, Log: log,
			Dial: podDial, PodDial: podDeliver,
		}
		if ids != nil {
			rt.px.Identities = ids
			// Tunnels open from the source pod's netns (the outer
			// connection leaves with the pod's address, marked).
			rt.hbone = &hbone.Client{
				SourceFor:   func(id string) (identity.Source, error) { return workloadSource(ids, id) },
				DialContext: podDialContext,
				Log:         log,
			}
			rt.px.HBONE = rt.hbone
		}
		rt.handler = &nodeHandler{px: rt.px, log: log, servers: map[*inpod.Pod]*podHBONE{}}
		h = rt.handler
	}
	srv, err := inpod.New(inpod.Options{
		SocketPath: o.socket, Handler: h, Capture: o.capture, CaptureConfig: cfg,
		DrainTimeout: o.drain, NoOriginalSource: !o.origSrc, Log: log,
	})
	if err != nil {
		rt.closeIdentities()
		return nil, err
	}
	rt.srv = srv
	if o.connect {
		ctx, cancel := context.WithCancel(context.Background())
		rt.cancel = cancel
		go func() {
			defer close(rt.done)
			srv.Connect(ctx)
		}()
		log.Info("in-pod mode: connecting to the node agent", "path", o.socket, "capture", o.capture, "forward_only", o.forward)
		return rt, nil
	}
	close(rt.done)
	if err := srv.Listen(); err != nil {
		rt.closeIdentities()
		return nil, err
	}
	log.Info("in-pod mode started", "path", o.socket, "capture", o.capture, "forward_only", o.forward)
	return rt, nil
}

// stop stops accepting pods and removes every pod's listeners and rules,
// draining connections until ctx ends. Nil-safe.
func (rt *inpodRuntime) stop(ctx context.Context, log *slog.Logger) {
	if rt == nil {
		return
	}
	if rt.cancel != nil {
		rt.cancel()
	}
	if err := rt.srv.Close(ctx); err != nil {
		log.Warn("in-pod shutdown", "err", err)
	}
	<-rt.done
	if rt.handler != nil {
		rt.handler.closeAll(ctx)
	}
	if rt.px != nil {
		_ = rt.px.Close()
	}
	if rt.hbone != nil {
		_ = rt.hbone.Close()
	}
	rt.closeIdentities()
}

func (rt *inpodRuntime) closeIdentities() {
	if rt.ids != nil {
		_ = rt.ids.Close()
	}
	if rt.closeCA != nil {
		rt.closeCA()
	}
}

// nodeIdentities issues certificates for any workload of the node: from
// the built-in CA (--ca-dir) or the Istio CA (--ca-address, with the node
// proxy's ImpersonatedIdentity). nil without either: then only direct
// (non-HBONE) traffic works.
func nodeIdentities(o *identityOptions, log *slog.Logger) (*node.Cache, func(), error) {
	switch {
	case o.CADir != "":
		ca, err := identity.LoadOrCreateCA(o.CADir)
		if err != nil {
			return nil, nil, fmt.Errorf("in-pod identities: --ca-dir: %w", err)
		}
		return node.NewCAIdentities(ca, o.CertLifetime), nil, nil
	case o.CAAddress != "":
		creds, err := o.caCredentials()
		if err != nil {
			return nil, nil, err
		}
		conn, err := grpc.NewClient(o.CAAddress, grpc.WithTransportCredentials(creds))
		if err != nil {
			return nil, nil, fmt.Errorf("in-pod identities: --ca-address %q: %w", o.CAAddress, err)
		}
		tokenFile := o.CATokenFile
		if _, err := os.Stat(tokenFile); err != nil && tokenFile == defaultCATokenFile {
			tokenFile = "" // no projected token: a CA that needs none
		}
		return node.NewIstioCAIdentities(identity.NewIstioCAClient(conn, tokenFile), o.CertLifetime), func() { conn.Close() }, nil
	}
	log.Warn("in-pod mode without --ca-dir or --ca-address: no workload certificates, HBONE disabled")
	return nil, nil, nil
}

func workloadSource(ids node.Identities, spiffeID string) (identity.Source, error) {
	id, err := identity.Parse(spiffeID)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return ids.Source(ctx, id)
}

// podKey carries the in-pod Pod a connection belongs to down to the dial
// hooks, so upstream sockets open in that pod's netns.
type podKey struct{}

func withPod(ctx context.Context, p *inpod.Pod) context.Context {
	return context.WithValue(ctx, podKey{}, p)
}

// podDialContext dials from the netns of the context's pod (the proxy's
// own netns when there is none).
func podDialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if p, ok := ctx.Value(podKey{}).(*inpod.Pod); ok {
		return p.DialContext(ctx, network, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// podDial is node.Proxy's Dial and PodDial hook.
func podDial(ctx context.Context, _ *state.Workload, addr netip.AddrPort) (net.Conn, error) {
	return podDialContext(ctx, "tcp", addr.String())
}

// podDeliver is node.Proxy's PodDial hook: it delivers an inbound
// connection inside the destination pod from the client's address, which
// the node proxy passes along (the plaintext client, or the HBONE
// tunnel's peer: the source pod, whose node dialed it from that pod).
func podDeliver(ctx context.Context, _ *state.Workload, addr netip.AddrPort) (net.Conn, error) {
	p, ok := ctx.Value(podKey{}).(*inpod.Pod)
	if !ok {
		return podDialContext(ctx, "tcp", addr.String())
	}
	src, _ := node.InboundSource(ctx)
	return p.DialFrom(ctx, src.Addr(), "tcp", addr.String())
}

// nodeHandler hands in-pod connections to the node proxy.
type nodeHandler struct {
	px  *node.Proxy
	log *slog.Logger

	mu      sync.Mutex
	servers map[*inpod.Pod]*podHBONE
	closed  bool
}

// source is the workload a pod's outbound connection comes from: by the
// connection's source address (the pod's IP), else by the agent's UID.
func (h *nodeHandler) source(p *inpod.Pod, c net.Conn) *state.Workload {
	if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if w := h.px.WorkloadByAddr(ra.AddrPort().Addr().Unmap()); w != nil {
			return w
		}
	}
	return h.px.Workload(p.UID)
}

func (h *nodeHandler) Outbound(p *inpod.Pod, c *net.TCPConn, dst netip.AddrPort) {
	if err := h.px.HandleOutbound(withPod(context.Background(), p), c, h.source(p, c), dst); err != nil {
		h.log.Debug("in-pod outbound", "pod", p.String(), "dst", dst, "err", err)
	}
}

func (h *nodeHandler) Inbound(p *inpod.Pod, c *net.TCPConn, dst netip.AddrPort) {
	if err := h.px.HandleInboundPlaintext(withPod(context.Background(), p), c, dst); err != nil {
		h.log.Debug("in-pod inbound", "pod", p.String(), "dst", dst, "err", err)
	}
}

// HBONE terminates the tunnel with an HBONE server presenting the pod's
// own identity, one per pod, created on its first tunnel. It returns when
// the server is done with c, so the pod's drain waits for it.
func (h *nodeHandler) HBONE(p *inpod.Pod, c *net.TCPConn) {
	s, err := h.serverFor(p, c)
	if err != nil {
		h.log.Debug("in-pod hbone", "pod", p.String(), "err", err)
		c.Close()
		return
	}
	done := make(chan struct{})
	if !s.ln.push(&notifyConn{TCPConn: c, done: done}) {
		c.Close()
		return
	}
	<-done
}

// serverFor returns the pod's HBONE server, building it on the first
// tunnel (a certificate fetch: other pods are not held up meanwhile).
func (h *nodeHandler) serverFor(p *inpod.Pod, c *net.TCPConn) (*podHBONE, error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, errors.New("shutting down")
	}
	if s := h.servers[p]; s != nil {
		h.mu.Unlock()
		<-s.ready
		if s.err != nil {
			return nil, s.err
		}
		return s, nil
	}
	s := &podHBONE{ready: make(chan struct{})}
	h.servers[p] = s
	h.mu.Unlock()

	s.err = h.build(s, p, c)
	h.mu.Lock()
	current := h.servers[p] == s
	if s.err != nil && current {
		delete(h.servers, p) // the next tunnel tries again
	}
	h.mu.Unlock()
	close(s.ready)
	if s.err != nil {
		return nil, s.err
	}
	if !current { // the pod went away while we built it
		s.close()
		return nil, errors.New("pod removed")
	}
	return s, nil
}

func (h *nodeHandler) build(s *podHBONE, p *inpod.Pod, c *net.TCPConn) error {
	if h.px.Identities == nil {
		return errors.New("no workload identities (--ca-dir or --ca-address)")
	}
	local := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
	w := h.px.WorkloadByAddr(local)
	if w == nil {
		w = h.px.Workload(p.UID)
	}
	if w == nil {
		return fmt.Errorf("no workload at %s", local)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := h.px.InboundServer(ctx, w)
	if err != nil {
		return err
	}
	// Streams are delivered from inside this pod's netns, and only to this
	// pod: its netns must not become a relay to its neighbours.
	own := slices.Clone(w.Addresses)
	srv.Dial = func(ctx context.Context, r *hbone.Request) (net.Conn, error) {
		if !slices.Contains(own, r.Target.Addr().Unmap()) {
			return nil, fmt.Errorf("pod %s: target %s is not this pod: %w", p, r.Target, hbone.ErrTargetDenied)
		}
		return h.px.Inbound(withPod(ctx, p), r)
	}
	s.srv, s.ln, s.done = srv, newConnQueue(c.LocalAddr()), make(chan struct{})
	go func() {
		defer close(s.done)
		_ = srv.Serve(s.ln)
	}()
	return nil
}

// PodRemoved stops the pod's HBONE server (inpod.PodRemover).
func (h *nodeHandler) PodRemoved(p *inpod.Pod) {
	h.mu.Lock()
	s := h.servers[p]
	delete(h.servers, p)
	h.mu.Unlock()
	if s != nil {
		s.close()
	}
}

// closeAll drains every pod's HBONE server at shutdown, together: each
// connection gets GOAWAY and its tunnels run until they end or ctx does.
func (h *nodeHandler) closeAll(ctx context.Context) {
	h.mu.Lock()
	h.closed = true
	servers := h.servers
	h.servers = map[*inpod.Pod]*podHBONE{}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Go(func() { s.shutdown(ctx) })
	}
	wg.Wait()
}

// podHBONE is one pod's HBONE server, fed the connections its 15008
// listener accepts. ready is closed once it is built (err says if not).
type podHBONE struct {
	ready chan struct{}
	err   error
	srv   *hbone.Server
	ln    *connQueue
	done  chan struct{}
}

// close waits for the build, then stops the server at once (the pod is
// gone); safe to repeat.
func (s *podHBONE) close() { s.stop((*hbone.Server).Close) }

// shutdown is close after a drain bounded by ctx: GOAWAY, and open tunnels
// run until they end or ctx does.
func (s *podHBONE) shutdown(ctx context.Context) {
	s.stop(func(srv *hbone.Server) error { return srv.Shutdown(ctx) })
}

func (s *podHBONE) stop(end func(*hbone.Server) error) {
	<-s.ready
	if s.err != nil {
		return
	}
	_ = end(s.srv)
	<-s.done
}

// connQueue is a net.Listener whose connections are pushed to it.
type connQueue struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	stop chan struct{}
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, ch: make(chan net.Conn), stop: make(chan struct{})}
}

func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.ch <- c:
		return true
	case <-q.stop:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.ch:
		return c, nil
	case <-q.stop:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.once.Do(func() { close(q.stop) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

// notifyConn reports when its user closes it.
type notifyConn struct {
	*net.TCPConn
	once sync.Once
	done chan struct{}
}

func (c *notifyConn) Close() error {
	err := c.TCPConn.Close()
	c.once.Do(func() { close(c.done) })
	return err
}
