package httpproxy

import (
	"context"
	"net"

	"github.com/meshlet/meshlet/state"
)

// serveHTTP2 serves a downstream HTTP/2 (h2 or h2c prior-knowledge)
// connection until it closes or ctx is done (then GOAWAY and drain).
// Owner: HTTP/2 engineer (replace this stub).
func (p *Proxy) serveHTTP2(ctx context.Context, conn net.Conn, hcm *state.HTTPConnectionManager, info *ConnInfo) {
	panic("serveHTTP2: not implemented")
}
