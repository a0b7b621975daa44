package node

import (
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// L7 authorization on inbound. When a destination's policies carry L7
// matches (the meshlet extension of istio.security.Authorization) and the
// connection-time decision depends on them, the node proxy speaks HTTP
// itself on the inbound stream: HTTP/1.1 or h2c with prior knowledge,
// each request's path normalized, the policies evaluated with the
// request, 403 "RBAC: access denied" for a denied request and the
// normalized request forwarded to the pod otherwise. Everything else keeps
// the byte-copy path.

// l7Normalization is applied to every request path before authorization,
// and the normalized path is what the pod receives, so the pod never sees
// a path other than the one the policy judged: dot segments removed,
// unreserved escapes decoded, slashes merged, and escaped slashes (%2F,
// %5C) decoded too (Istio's DECODE_AND_MERGE_SLASHES), so "/admin%2Fx"
// cannot slip past a "/admin/*" rule.
var l7Normalization = state.PathNormalization{
	NormalizePath:  true,
	MergeSlashes:   true,
	EscapedSlashes: state.UnescapeAndForward,
}

// deniedBody is the body Envoy's RBAC filter answers with, which clients
// and tests of Istio already recognise.
const deniedBody = "RBAC: access denied"

// l7Conn describes one inbound connection served with HTTP.
type l7Conn struct {
	p      *Proxy
	dst    *state.Workload
	target netip.AddrPort // the pod's address and port
	peerID string
	src    netip.AddrPort
	// hbone: the connection came over an HBONE tunnel, so pod
	// connections honour the workload's application_tunnel.
	hbone bool
}

// serveHTTP serves HTTP on conn until the client closes it or ctx ends,
// authorizing each request and forwarding allowed ones to the pod. It
// closes conn. half, when set, learns the connection's idle state (see
// halfClose).
func (lc *l7Conn) serveHTTP(ctx context.Context, conn net.Conn, half *halfClose) {
	p := lc.p
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		if lc.hbone {
			return p.deliverHBONE(ctx, lc.dst, lc.target, lc.src, lc.peerID)
		}
		return p.PodDial(withInboundSource(ctx, lc.src), lc.dst, lc.target)
	}
	h1 := &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 4, IdleConnTimeout: 90 * time.Second}
	h2 := &http.Transport{DialContext: dial, IdleConnTimeout: 90 * time.Second, Protocols: new(http.Protocols)}
	h2.Protocols.SetUnencryptedHTTP2(true)
	defer h1.CloseIdleConnections()
	defer h2.CloseIdleConnections()
	quiet := log.New(io.Discard, "", 0)
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme = "http"
			r.Out.URL.Host = lc.target.String()
			r.Out.Host = r.In.Host
		},
		Transport: roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			// Keep the client's protocol towards the pod: gRPC needs h2
			// end to end, and an HTTP/1.1 app may not speak h2c.
			if r.ProtoMajor == 2 {
				return h2.RoundTrip(r)
			}
			return h1.RoundTrip(r)
		}),
		FlushInterval: -1,
		ErrorLog:      quiet,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) {
			w.WriteHeader(http.StatusServiceUnavailable)
		},
	}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	idle := p.IdleTimeout
	if idle <= 0 {
		idle = 5 * time.Minute
	}
	srv := &http.Server{
		Handler:           &l7Handler{lc: lc, rp: rp},
		Protocols:         protos,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       idle,
		ErrorLog:          quiet,
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	ln := newOneConnListener(conn)
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed || s == http.StateHijacked {
			ln.Close()
		}
		if half != nil {
			half.state(s)
		}
	}
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	_ = srv.Serve(ln)
	// Serve returns once the listener is closed, which happens when the
	// connection ended; a hijacked (upgraded) connection is the reverse
	// proxy's until its copy ends, and srv.Close does not touch it.
	srv.Close()
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// l7Handler authorizes one request and forwards it.
type l7Handler struct {
	lc *l7Conn
	rp *httputil.ReverseProxy
}

func (h *l7Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	lc := h.lc
	uri := r.URL.RequestURI()
	if r.URL.Opaque != "" || r.Method == http.MethodConnect {
		// Absolute-form or CONNECT: not something a pod behind the node
		// proxy is addressed with.
		http.Error(w, "unsupported request target", http.StatusBadRequest)
		return
	}
	norm, verdict := policy.NormalizePath(l7Normalization, uri)
	if verdict != policy.PathContinue {
		http.Error(w, "invalid path", http.StatusBadRequest)
		return
	}
	path, _, _ := strings.Cut(norm, "?")
	// The snapshot current for this request: a policy change applies to
	// the next request on a kept-alive connection.
	amb := lc.p.Store.Load().Ambient
	dst := amb.Workload(lc.dst.UID)
	if dst == nil {
		dst = lc.dst
	}
	d := policy.EvalAuthz(amb.PoliciesFor(dst), policy.AuthzConn{
		SrcIdentity: lc.peerID,
		Src:         lc.src,
		Dst:         lc.target,
		HTTP:        &policy.AuthzRequest{Method: r.Method, Path: path, Host: r.Host},
	})
	if !d.Allowed {
		lc.p.stats.RequestsDenied.Add(1)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, deniedBody)
		return
	}
	lc.p.stats.Requests.Add(1)
	if norm != uri {
		u, err := url.ParseRequestURI(norm)
		if err != nil {
			http.Error(w, "invalid path", http.StatusBadRequest)
			return
		}
		r.URL.Path, r.URL.RawPath, r.URL.RawQuery = u.Path, u.RawPath, u.RawQuery
	}
	h.rp.ServeHTTP(w, r)
}

// oneConnListener hands out one connection, then blocks until closed.
type oneConnListener struct {
	mu   sync.Mutex
	conn net.Conn
	addr net.Addr
	done chan struct{}
	once sync.Once
}

func newOneConnListener(c net.Conn) *oneConnListener {
	return &oneConnListener{conn: c, addr: c.LocalAddr(), done: make(chan struct{})}
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	c := l.conn
	l.conn = nil
	l.mu.Unlock()
	if c != nil {
		return c, nil
	}
	<-l.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *oneConnListener) Addr() net.Addr { return l.addr }

// inboundHTTP returns the connection an HBONE stream is relayed to when
// its requests must be authorized one by one: one end of an in-memory
// pipe whose other end is served with HTTP.
//
// ctx's values (the in-pod caller's pod, say) reach PodDial; its
// cancellation does not: the stream outlives the dial.
func (p *Proxy) inboundHTTP(ctx context.Context, dst *state.Workload, target netip.AddrPort, peerID string, src netip.AddrPort) (net.Conn, error) {
	client, server := net.Pipe()
	if !p.track(server) {
		client.Close()
		server.Close()
		return nil, ErrClosed
	}
	p.stats.InboundHTTP.Add(1)
	half := &halfClose{Conn: server, idle: true}
	lc := &l7Conn{p: p, dst: dst, target: target, peerID: peerID, src: netip.AddrPortFrom(src.Addr().Unmap(), src.Port()), hbone: true}
	go func() {
		defer p.untrack(server)
		lc.serveHTTP(context.WithoutCancel(ctx), half, half)
	}()
	return &halfClosePipe{Conn: client, half: half}, nil
}

// halfClose is the served end of the pipe. It turns the tunnel client's
// end of input into an EOF for net/http, but only once no request is in
// flight: net.Pipe cannot half-close, and an EOF that net/http reads while
// a request is being handled cancels that request, although the client
// is still waiting for the answer (a client that shuts down its write
// side after sending). The server then closes the idle connection, which
// ends the relay's other direction.
type halfClose struct {
	net.Conn

	mu       sync.Mutex
	idle     bool      // no request in flight (per net/http's ConnState)
	finished bool      // the client sent everything it will send
	kicked   bool      // a deadline was set only to wake a blocked Read
	rd       time.Time // the read deadline net/http asked for
}

func (h *halfClose) Read(b []byte) (int, error) {
	for {
		h.mu.Lock()
		eof := h.finished && h.idle
		h.mu.Unlock()
		if eof {
			return 0, io.EOF
		}
		n, err := h.Conn.Read(b)
		if n > 0 || err == nil {
			return n, err
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			h.mu.Lock()
			woke, rd := h.kicked, h.rd
			h.kicked = false
			h.mu.Unlock()
			if woke {
				_ = h.Conn.SetReadDeadline(rd)
				continue
			}
		}
		return n, err
	}
}

func (h *halfClose) SetReadDeadline(t time.Time) error {
	h.mu.Lock()
	h.rd = t
	h.mu.Unlock()
	return h.Conn.SetReadDeadline(t)
}

func (h *halfClose) SetDeadline(t time.Time) error {
	h.mu.Lock()
	h.rd = t
	h.mu.Unlock()
	return h.Conn.SetDeadline(t)
}

// kick wakes a Read blocked on the pipe so that it looks at the state
// again.
func (h *halfClose) kick() {
	h.mu.Lock()
	h.kicked = true
	h.mu.Unlock()
	_ = h.Conn.SetReadDeadline(time.Now())
}

func (h *halfClose) state(s http.ConnState) {
	h.mu.Lock()
	h.idle = s == http.StateNew || s == http.StateIdle
	wake := h.idle && h.finished
	h.mu.Unlock()
	if wake {
		h.kick()
	}
}

func (h *halfClose) clientDone() {
	h.mu.Lock()
	h.finished = true
	h.mu.Unlock()
	h.kick()
}

// halfClosePipe is the relay's end of the pipe; CloseWrite reports the
// tunnel client's end of input.
type halfClosePipe struct {
	net.Conn
	half *halfClose
}

func (c *halfClosePipe) CloseWrite() error {
	c.half.clientDone()
	return nil
}
