//lint:file-ignore SA1019 x/net/http2 is deprecated in favour of net/http, but one ServeConn per verified mTLS connection, with the peer in the connection context; net/http.Server has no per-conn entry point with that.

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

// Flow control, tuned for bulk throughput over one connection: a large
// per-stream window lets a single tunneled TCP connection fill the pipe,
// the connection window lets many of them do so together, and 1 MiB frames
// cut per-frame overhead (TLS records stay at 16 KiB regardless).
const (
	streamWindow = 4 << 20
	connWindow   = 64 << 20
	maxFrameSize = 1 << 20
	copyBufSize  = 256 << 10
)

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
	Log                  *slog.Logger

	once    sync.Once
	tlsConf *tls.Config
	h2      *http2.Server
	base    *http.Server
	ctx     context.Context
	cancel  context.CancelFunc

	mu     sync.Mutex
	lns    map[net.Listener]struct{}
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup

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
		mcs := s.MaxConcurrentStreams
		if mcs == 0 {
			mcs = 1000
		}
		s.h2 = &http2.Server{
			MaxConcurrentStreams:         mcs,
			MaxReadFrameSize:             maxFrameSize,
			MaxUploadBufferPerStream:     streamWindow,
			MaxUploadBufferPerConnection: connWindow,
		}
		s.base = &http.Server{ErrorLog: slog.NewLogLogger(s.Log.Handler(), slog.LevelDebug)}
		s.ctx, s.cancel = context.WithCancel(context.Background())
		s.lns = map[net.Listener]struct{}{}
		s.conns = map[net.Conn]struct{}{}
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
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) untrack(c net.Conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
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
	tc := tls.Server(c, s.tlsConf)
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
	s.h2.ServeConn(tc, &http2.ServeConnOpts{
		Context:    context.WithValue(s.ctx, peerKey{}, peer),
		BaseConfig: s.base,
		Handler:    http.HandlerFunc(s.serveStream),
	})
}

// serveStream handles one CONNECT: one tunneled TCP connection.
func (s *Server) serveStream(w http.ResponseWriter, r *http.Request) {
	// ServeConn is still running (it spawned us), so wg is above zero.
	s.wg.Add(1)
	defer s.wg.Done()
	s.stats.Streams.Add(1)
	if r.Method != http.MethodConnect {
		http.Error(w, "hbone: only CONNECT is served", http.StatusMethodNotAllowed)
		return
	}
	target, err := netip.ParseAddrPort(r.Host)
	if err != nil {
		http.Error(w, "hbone: :authority must be ip:port", http.StatusBadRequest)
		return
	}
	// CONNECT carries no :scheme, so x/net leaves r.TLS nil; the peer
	// travels in the connection's context instead.
	peer, ok := r.Context().Value(peerKey{}).(Peer)
	if !ok {
		http.Error(w, "hbone: no peer identity", http.StatusForbidden)
		return
	}
	req := &Request{
		Target:     netip.AddrPortFrom(target.Addr().Unmap(), target.Port()),
		Peer:       peer,
		RemoteAddr: r.RemoteAddr,
		Meta:       readMeta(r.Header),
	}
	ct := s.ConnectTimeout
	if ct <= 0 {
		ct = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(r.Context(), ct)
	up, err := s.dial(ctx, req)
	cancel()
	if err != nil {
		code := http.StatusServiceUnavailable
		if errors.Is(err, ErrTargetDenied) {
			code = http.StatusForbidden
		}
		s.Log.Debug("hbone stream refused", "peer", peer.ID, "target", req.Target.String(), "status", code, "err", err)
		w.WriteHeader(code)
		return
	}
	defer up.Close()
	s.stats.StreamsConnected.Add(1)
	w.WriteHeader(http.StatusOK)
	if err := http.NewResponseController(w).Flush(); err != nil {
		return
	}
	spliceServer(w, r, up)
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

type peerKey struct{}

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
