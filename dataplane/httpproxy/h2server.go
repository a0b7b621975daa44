package httpproxy

// http2.Server.ServeConn is marked deprecated in favour of net/http's own
// HTTP/2, but it is the x/net entry point that serves one already-accepted
// (possibly replaying, possibly TLS-terminated) connection.
//lint:file-ignore SA1019 x/net/http2 ServeConn serves our pre-accepted conns

import (
	"context"
	"log/slog"
	"net"
	"net/http"

	"golang.org/x/net/http2"

	"github.com/meshlet/meshlet/state"
)

// defaultH2MaxConcurrentStreams caps downstream streams per connection when
// the HCM leaves it unset. Envoy's default is 2^31-1; a bound keeps one
// client from pinning unbounded upstream streams.
const defaultH2MaxConcurrentStreams = 1024

// serveHTTP2 serves a downstream HTTP/2 (h2 or h2c prior-knowledge)
// connection until it closes or ctx is done (then GOAWAY and drain).
// conn may be a wrapper replaying peeked bytes: x/net reads the client
// preface from it like from any other conn.
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
	// One http.Server per connection: its Shutdown is the only hook x/net
	// offers for a graceful GOAWAY, and a drain must reach this
	// connection, not every connection of the Proxy.
	hs := &http.Server{
		MaxHeaderBytes: int(headerKB) * 1024,
		ErrorLog:       slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	h2s := &http2.Server{
		MaxConcurrentStreams: maxStreams,
		IdleTimeout:          hcm.IdleTimeout,
	}
	if err := http2.ConfigureServer(hs, h2s); err != nil {
		p.log.Error("http2 server config", "listener", info.Listener, "err", err)
		return
	}
	// Shutdown sends GOAWAY(NO_ERROR); x/net closes the connection once the
	// open streams have finished.
	stop := context.AfterFunc(ctx, func() { _ = hs.Shutdown(context.Background()) })
	defer stop()

	h := &h2Handler{p: p, hcm: hcm, info: info, scheme: schemeOf(info)}
	h2s.ServeConn(conn, &http2.ServeConnOpts{
		// Streams must outlive the drain signal: they end on their own or
		// when the client resets them.
		Context:    context.WithoutCancel(ctx),
		BaseConfig: hs,
		Handler:    h,
	})
}
