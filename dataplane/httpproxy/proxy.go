package httpproxy

import (
	"context"
	"log/slog"
	"net"
	"sync"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/telemetry"
)

// Proxy is the HTTP connection manager shared by all listeners. It holds no
// per-connection state: ServeConn may be called concurrently.
type Proxy struct {
	store    *state.Store
	clusters *upstream.Manager
	opts     Options
	log      *slog.Logger

	// sessions recycles HTTP/1.1 connection state (buffers, parsed heads)
	// so steady-state requests allocate nothing.
	sessions sync.Pool

	// mirrors holds *mirrorStats by shadow cluster name; mirrorWG tracks
	// mirror goroutines.
	mirrors  sync.Map
	mirrorWG sync.WaitGroup
}

// New returns a Proxy reading routes from store and clusters from clusters.
func New(store *state.Store, clusters *upstream.Manager, opts Options, log *slog.Logger) *Proxy {
	if log == nil {
		log = slog.Default()
	}
	p := &Proxy{store: store, clusters: clusters, opts: opts, log: log}
	p.sessions.New = func() any { return newH1Session(p) }
	return p
}

// h2Preface is the HTTP/2 client connection preface (RFC 9113 section 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// ServeConn serves one downstream connection with the given connection
// manager config until the connection closes. When ctx is cancelled
// (listener drain) the connection is closed gracefully: HTTP/1.1 finishes
// the in-flight response with Connection: close, HTTP/2 sends GOAWAY and
// lets open streams finish. conn is closed on return.
func (p *Proxy) ServeConn(ctx context.Context, conn net.Conn, hcm *state.HTTPConnectionManager, info *ConnInfo) {
	defer conn.Close()
	if info == nil {
		info = &ConnInfo{}
	}
	if info.PeerPrincipal == "" && info.TLS != nil {
		info.PeerPrincipal = telemetry.PeerPrincipal(info.TLS)
	}
	if hcm.Codec == state.CodecHTTP2 ||
		(hcm.Codec == state.CodecAuto && info.TLS != nil && info.TLS.NegotiatedProtocol == "h2") {
		p.serveHTTP2(ctx, conn, hcm, info)
		return
	}
	s := p.sessions.Get().(*h1Session)
	s.start(ctx, conn, hcm, info)
	defer func() {
		s.stop()
		p.putSession(s)
	}()
	if hcm.Codec == state.CodecAuto {
		isH2, err := s.sniffH2()
		if err != nil {
			return
		}
		if isH2 {
			peeked := append([]byte(nil), s.br.peek()...)
			s.stop()
			p.serveHTTP2(ctx, &replayConn{Conn: conn, buf: peeked}, hcm, info)
			return
		}
	}
	s.serve()
}

// sniffH2 reads until the buffered bytes either diverge from the HTTP/2
// preface or hold all of it. The bytes stay buffered for whichever codec
// serves the connection.
func (s *h1Session) sniffH2() (bool, error) {
	s.armIdle()
	for {
		b := s.br.peek()
		n := len(b)
		if n > len(h2Preface) {
			n = len(h2Preface)
		}
		if string(b[:n]) != h2Preface[:n] {
			return false, nil
		}
		if n == len(h2Preface) {
			return true, nil
		}
		if err := s.br.fill(); err != nil {
			return false, err
		}
	}
}

// replayConn replays bytes already read from Conn before reading more.
type replayConn struct {
	net.Conn
	buf []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func (p *Proxy) putSession(s *h1Session) {
	// Do not keep buffers that grew for unusually large heads.
	if s.noRecycle || cap(s.br.buf) > 64<<10 || cap(s.req.raw) > 64<<10 {
		return
	}
	s.clear()
	p.sessions.Put(s)
}
