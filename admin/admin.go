package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"time"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/state"
)

// ListenerStatus is one listener as /listeners shows it.
type ListenerStatus struct {
	Name string
	// Addr is the bound address, empty when the listener is not bound.
	Addr string
	// Error is the bind error, if any.
	Error string
}

// ServerInfo is static information for /server_info.
type ServerInfo struct {
	Version   string `json:"version"`
	GoVersion string `json:"go_version"`
	Commit    string `json:"commit,omitempty"`
	NodeID    string `json:"node_id"`
	Cluster   string `json:"cluster,omitempty"`
}

// Deps is what the admin server reads. Nil funcs are treated as "nothing
// to show"; a nil Ready means never ready.
type Deps struct {
	Store    *state.Store
	Clusters *upstream.Manager
	// Ready returns nil once the proxy serves traffic (xDS synced and
	// listeners bound), else the reason it does not yet.
	Ready func() error
	// Listeners lists the listeners and their bound addresses.
	Listeners func() []ListenerStatus
	// XDSStatus is included in /config_dump under "xds" (JSON-encodable).
	XDSStatus func() any
	Info      ServerInfo
	Log       *slog.Logger
	// OpsDeps wires /stats, /logging, /drain_listeners, /quitquitquit,
	// /certs and the Envoy-shaped /config_dump (ops.go).
	OpsDeps
}

// Server is the admin HTTP server.
type Server struct {
	deps    Deps
	started time.Time
	lis     net.Listener
	srv     *http.Server
	done    chan struct{}

	// quitOnce makes repeated /quitquitquit calls start shutdown once.
	quitOnce sync.Once
}

// New binds addr, which must be a loopback address (the admin API changes
// nothing but discloses configuration, so it is never exposed), and starts
// serving.
func New(addr string, deps Deps) (*Server, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("admin address %q: must be a loopback address", addr)
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", addr, err)
	}
	return Serve(lis, deps), nil
}

// Serve starts serving on lis, a loopback socket the caller bound (or
// inherited from the process it upgrades).
func Serve(lis net.Listener, deps Deps) *Server {
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	s := &Server{deps: deps, started: time.Now(), lis: lis, done: make(chan struct{})}
	s.srv = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			deps.Log.Error("admin server stopped", "err", err)
		}
	}()
	return s
}

// ListenerFile duplicates the listening socket (for a successor process to
// serve the same admin port during an upgrade).
func (s *Server) ListenerFile() (*os.File, error) {
	tl, ok := s.lis.(*net.TCPListener)
	if !ok {
		return nil, fmt.Errorf("admin: listener %T cannot be handed off", s.lis)
	}
	return tl.File()
}

// Addr returns the bound address.
func (s *Server) Addr() net.Addr { return s.lis.Addr() }

// Shutdown stops the server, waiting for in-flight requests until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if err != nil {
		_ = s.srv.Close()
	}
	<-s.done
	return err
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", s.ready)
	mux.HandleFunc("GET /healthz/ready", s.ready)
	mux.HandleFunc("GET /config_dump", s.configDump)
	mux.HandleFunc("GET /listeners", s.listeners)
	mux.HandleFunc("GET /clusters", s.clusters)
	mux.HandleFunc("GET /server_info", s.serverInfo)
	mux.HandleFunc("GET /{$}", s.index)
	s.opsRoutes(mux)
	// Go's profiler, for the team's performance work: the admin address
	// only binds loopback, like Envoy's /heapprofiler and /cpuprofiler.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	return mux
}

func (s *Server) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprint(w, "meshlet admin\n  /ready\n  /healthz/ready\n  /config_dump\n  /listeners\n  /clusters\n  /server_info\n  /stats\n  /certs\n  /logging?level= (POST)\n  /drain_listeners (POST)\n  /quitquitquit (POST)\n  /reopen_logs (POST)\n")
}

// readyErr is nil when the proxy is ready.
func (s *Server) readyErr() error {
	if s.deps.Ready == nil {
		return errors.New("no readiness source")
	}
	return s.deps.Ready()
}

func (s *Server) ready(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if err := s.readyErr(); err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "NOT READY: %v\n", err)
		return
	}
	fmt.Fprint(w, "LIVE\n")
}
