package httpproxy

import (
	"context"
	"net"

	"github.com/meshlet/meshlet/state"
)

// defaultH2MaxConcurrentStreams caps downstream streams per connection when
// the HCM leaves it unset. Envoy's default is 2^31-1; a bound keeps one
// client from pinning unbounded upstream streams.
const defaultH2MaxConcurrentStreams = 1024

// serveHTTP2 serves a downstream HTTP/2 (h2 or h2c prior-knowledge)
// connection until it closes or ctx is done (then GOAWAY and drain).
// conn may be a wrapper replaying peeked bytes: the server reads the client
// preface from it like from any other conn.
//
// The server is our own (h2sconn.go): one goroutine reads frames, one
// writes batches of them, and each stream runs h2Handler.ServeHTTP on its
// own goroutine. Profiles of x/net's http2.Server showed a write syscall
// per flushed frame and several channel hand-offs per stream; here frames
// of all streams are appended to one buffer that is written once per turn.
func (p *Proxy) serveHTTP2(ctx context.Context, conn net.Conn, hcm *state.HTTPConnectionManager, info *ConnInfo) {
	defer conn.Close()

	maxStreams := hcm.HTTP2MaxConcurrentStreams
	if maxStreams == 0 {
		maxStreams = defaultH2MaxConcurrentStreams
	}
	headerKB := hcm.MaxRequestHeadersKB
	if headerKB == 0 {
		headerKB = state.DefaultMaxRequestHeadersKB
	}
	h := &h2Handler{p: p, hcm: hcm, info: info, scheme: schemeOf(info)}
	h.prepare()
	c := newH2sConn(conn, h, h2sConfig{
		maxStreams: maxStreams,
		// x/net's allowance on top of the HTTP/1.1 limit: HPACK counts 32
		// bytes of overhead per field.
		maxHeaderList:  uint32(headerKB)*1024 + 320,
		idleTimeout:    hcm.IdleTimeout,
		maxRequests:    hcm.MaxRequestsPerConnection,
		headersTimeout: hcm.RequestHeadersTimeout,
		maxAge:         hcm.MaxConnectionDuration,
	})
	// Streams must outlive the drain signal: they end on their own or when
	// the client resets them. The drain itself is a GOAWAY(NO_ERROR); the
	// connection closes once the open streams have finished.
	c.base = context.WithoutCancel(ctx)
	stop := context.AfterFunc(ctx, c.drain)
	defer stop()
	c.serve()
}
