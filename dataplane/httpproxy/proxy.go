package httpproxy

import (
	"context"
	"log/slog"
	"net"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/state"
)

// Proxy is the HTTP connection manager shared by all listeners.
// Owner: HTTP/1.1 engineer (replace this stub; keep New and ServeConn).
type Proxy struct {
	store    *state.Store
	clusters *upstream.Manager
	opts     Options
	log      *slog.Logger
}

// New returns a Proxy reading routes from store and clusters from clusters.
func New(store *state.Store, clusters *upstream.Manager, opts Options, log *slog.Logger) *Proxy {
	if log == nil {
		log = slog.Default()
	}
	return &Proxy{store: store, clusters: clusters, opts: opts, log: log}
}

// ServeConn serves one downstream connection with the given connection
// manager config until the connection closes. When ctx is cancelled
// (listener drain) the connection is closed gracefully: HTTP/1.1 finishes
// the in-flight response with Connection: close, HTTP/2 sends GOAWAY and
// lets open streams finish. conn is closed on return.
func (p *Proxy) ServeConn(ctx context.Context, conn net.Conn, hcm *state.HTTPConnectionManager, info *ConnInfo) {
	panic("ServeConn: not implemented")
}
