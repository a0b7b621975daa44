package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshlet/meshlet/identity"
)

// DefaultPort is the HBONE mTLS port (Istio's 15008).
const DefaultPort = 15008

var (
	// ErrServerClosed is returned by Serve after Close.
	ErrServerClosed = errors.New("hbone: server closed")
	// ErrTargetDenied is returned by a Dial hook to refuse a destination;
	// the client gets 403.
	ErrTargetDenied = errors.New("hbone: destination not allowed")
)

// Request is one CONNECT stream as the server's Dial hook sees it.
type Request struct {
	// Target is the :authority of the CONNECT, the destination ip:port.
	Target netip.AddrPort
	// Peer is the authenticated tunnel client.
	Peer Peer
	// RemoteAddr is the tunnel client's transport address.
	RemoteAddr string
	// Meta is what the client sent in forwarded/baggage/traceparent.
	Meta Meta
}

// Source is the address of the connection's original client: the
// forwarded for= address when the tunnel peer sent one (a proxy speaking
// for its client, as ztunnel and waypoints do), else the tunnel peer's.
// Telemetry and policy should report this one.
func (r *Request) Source() netip.Addr {
	if r.Meta.ForwardedFor.IsValid() {
		return r.Meta.ForwardedFor
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// Server accepts HBONE tunnels. Fields may be set until the first Serve.
type Server struct {
	// Source supplies the server certificate and the roots that client
	// certificates must chain to. Required.
	Source identity.Source
	// Authorize admits or refuses a peer during the handshake; a refusal
	// ends the connection. Default: the peer's trust domain must equal the
	// server certificate's.
	Authorize func(Peer) error
	// Dial connects a stream to its destination, for example the local
	// workload. Default: a TCP dial to Request.Target. Returning an error
	// wrapping ErrTargetDenied answers 403, any other error 503.
	Dial func(ctx context.Context, r *Request) (net.Conn, error)
	// HandshakeTimeout bounds the TLS handshake (default 10s).
	HandshakeTimeout time.Duration
	// ConnectTimeout bounds Dial (default 10s).
	ConnectTimeout time.Duration
	// MaxConcurrentStreams per connection (default 1000).
	MaxConcurrentStreams uint32
	// StreamDone, when set, is called when a connected stream has ended,
	// for telemetry: Request.Source is the client to report.
	StreamDone func(r *Request, s StreamStats)
	Log        *slog.Logger

	once    sync.Once
	tlsConf *tls.Config
	mcs     uint32
	ctx     context.Context
	cancel  context.CancelFunc

	mu  sync.Mutex
	lns map[net.Listener]struct{}
	// conns maps each accepted connection to its HTTP/2 side once the
	// handshake is done (nil before).
	conns    map[net.Conn]*mux
	closed   bool
	draining bool
	wg       sync.WaitGroup

	stats ServerStats
}

// ServerStats are cumulative counters, safe to read at any time.
type ServerStats struct {
	Accepted         atomic.Int64 // TCP connections accepted
	HandshakeFailed  atomic.Int64 // TLS failures, including refused peers
	Streams          atomic.Int64 // CONNECT streams received
	StreamsConnected atomic.Int64 // streams answered 200
}

// Stats returns the server's counters.
func (s *Server) Stats() *ServerStats { return &s.stats }

func (s *Server) init() {
	s.once.Do(func() {
		if s.Log == nil {
			s.Log = slog.Default()
		}
		s.tlsConf = serverTLS(s.Source, s.Authorize)
		s.mcs = s.MaxConcurrentStreams
		if s.mcs == 0 {
			s.mcs = 1000
		}
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.lns = map[net.Listener]struct{}{}
		s.conns = map[net.Conn]*mux{}
	})
}

// ListenAndServe listens on addr (":15008" when empty) and serves.
func (s *Server) ListenAndServe(addr string) error {
	if addr == "" {
		addr = fmt.Sprintf(":%d", DefaultPort)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("hbone: listen %s: %w", addr, err)
	}
	return s.Serve(ln)
}

// Serve accepts tunnels on ln until Close; it always returns an error,
// ErrServerClosed after Close.
func (s *Server) Serve(ln net.Listener) error {
	if s.Source == nil {
		return errors.New("hbone: server needs an identity Source")
	}
	s.init()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.lns[ln] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	var backoff time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("hbone: accept on %s: %w", ln.Addr(), err)
		}
		backoff = 0
		s.stats.Accepted.Add(1)
		if !s.track(c) {
			c.Close()
			return ErrServerClosed
		}
		go s.serveConn(c)
	}
}

// track registers c for Close and counts it in wg; false after Close.
func (s *Server) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = nil
	s.wg.Add(1)
	return true
}

// attach records c's HTTP/2 side for Shutdown; false when the server is
// draining already, so the caller drains it itself.
func (s *Server) attach(c net.Conn, m *mux) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.conns[c] = m
	return !s.draining
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Shutdown drains the server, as Envoy and ztunnel do: it stops
// accepting, and sends every connection a GOAWAY (NO_ERROR) naming the
// last stream it took. Those streams, tunnels in flight, run until they
// end; streams the client opens after that are refused (REFUSED_STREAM,
// which the client retries elsewhere), and each connection closes once it
// carries no stream, an idle one right after its GOAWAY. Shutdown returns
// nil when every connection has closed, or, when ctx ends first, closes
// what is left as Close does and returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.init()
	s.mu.Lock()
	s.closed = true
	s.draining = true
	for ln := range s.lns {
		ln.Close()
	}
	n := 0
	for _, m := range s.conns {
		if m != nil {
			m.drain()
			n++
		}
	}
	s.mu.Unlock()
	s.Log.Debug("hbone server draining", "connections", n)
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		<-done
		return fmt.Errorf("hbone: drain: %w", ctx.Err())
	}
}

// Close stops accepting, ends every tunnel and waits for their goroutines.
func (s *Server) Close() error {
	s.init()
	s.mu.Lock()
	s.closed = true
	for ln := range s.lns {
		ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.cancel()
	s.wg.Wait()
	return nil
}

func (s *Server) serveConn(c net.Conn) {
	defer s.untrack(c)
	defer c.Close()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	hs := s.HandshakeTimeout
	if hs <= 0 {
		hs = 10 * time.Second
	}
	bc := newBufConn(c)
	tc := tls.Server(bc, s.tlsConf)
	ctx, cancel := context.WithTimeout(s.ctx, hs)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.stats.HandshakeFailed.Add(1)
		s.Log.Debug("hbone handshake failed", "remote", c.RemoteAddr().String(), "err", err)
		return
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != alpnH2 {
		s.stats.HandshakeFailed.Add(1)
		s.Log.Debug("hbone peer did not negotiate h2", "remote", c.RemoteAddr().String(), "alpn", p)
		return
	}
	peer, err := peerOf(tc.ConnectionState())
	if err != nil { // verified in the handshake already
		s.stats.HandshakeFailed.Add(1)
		return
	}
	bc.startBuffering()
	m := newMux(tc, bc, false)
	m.maxStreams = s.mcs
	remote := c.RemoteAddr()
	m.onStream = func(st *stream, f *http2.MetaHeadersFrame) {
		st.local, st.peer = c.LocalAddr(), remote
		h := make(http.Header, 4)
		for _, hf := range f.RegularFields() {
			h.Add(hf.Name, hf.Value)
		}
		// The read loop is running, so serveConn holds wg above zero.
		s.wg.Add(1)
		go s.serveStream(m, st, f.PseudoValue("method"), f.PseudoValue("authority"), h, peer, remote.String())
	}
	if err := m.start(); err != nil {
		s.Log.Debug("hbone connection setup failed", "remote", remote.String(), "err", err)
		return
	}
	if !s.attach(c, m) {
		// Shutdown began during the handshake.
		m.drain()
	}
	m.wait()
}

// serveStream handles one CONNECT: one tunneled TCP connection.
func (s *Server) serveStream(m *mux, st *stream, method, authority string, h http.Header, peer Peer, remote string) {
	defer s.wg.Done()
	s.stats.Streams.Add(1)
	refuse := func(code int) {
		_ = m.respond(st, code, true)
		st.Close()
	}
	if method != http.MethodConnect {
		refuse(http.StatusMethodNotAllowed)
		return
	}
	target, err := netip.ParseAddrPort(authority)
	if err != nil {
		refuse(http.StatusBadRequest)
		return
	}
	req := &Request{
		Target:     netip.AddrPortFrom(target.Addr().Unmap(), target.Port()),
		Peer:       peer,
		RemoteAddr: remote,
		Meta:       readMeta(h),
	}
	ct := s.ConnectTimeout
	if ct <= 0 {
		ct = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(s.ctx, ct)
	up, err := s.dial(ctx, req)
	cancel()
	if err != nil {
		code := http.StatusServiceUnavailable
		if errors.Is(err, ErrTargetDenied) {
			code = http.StatusForbidden
		}
		s.Log.Debug("hbone stream refused", "peer", peer.ID, "target", req.Target.String(), "status", code, "err", err)
		refuse(code)
		return
	}
	if err := m.respond(st, http.StatusOK, false); err != nil {
		up.Close()
		st.Close()
		return
	}
	s.stats.StreamsConnected.Add(1)
	start := time.Now()
	rx, tx := relay(st, up)
	if s.StreamDone != nil {
		s.StreamDone(req, StreamStats{Start: start, Duration: time.Since(start), Received: rx, Sent: tx})
	}
}

// StreamStats describe one finished tunneled connection.
type StreamStats struct {
	Start    time.Time
	Duration time.Duration
	// Received came from the tunnel client, Sent went back to it.
	Received, Sent int64
}

func (s *Server) dial(ctx context.Context, r *Request) (net.Conn, error) {
	if s.Dial != nil {
		return s.Dial(ctx, r)
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", r.Target.String())
	if err != nil {
		return nil, fmt.Errorf("hbone: connect %s: %w", r.Target, err)
	}
	return c, nil
}

// peerOf reads the identity of an already verified connection.
func peerOf(cs tls.ConnectionState) (Peer, error) {
	if len(cs.PeerCertificates) == 0 {
		return Peer{}, errors.New("no peer certificate")
	}
	id, err := spiffeID(cs.PeerCertificates[0])
	if err != nil {
		return Peer{}, err
	}
	td, err := TrustDomain(id)
	if err != nil {
		return Peer{}, err
	}
	return Peer{ID: id, TrustDomain: td, Chain: cs.PeerCertificates}, nil
}
