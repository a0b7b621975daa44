package meshlet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"sync/atomic"

	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/xds"
)

// Server is an in-process mesh data plane. The zero value is ready to be
// configured: set the fields, then call Start or just use it. Fields must
// not be changed after the first use (see ErrFrozen).
type Server struct {
	// Bootstrap is the path of an Envoy v3 bootstrap file (YAML, or JSON
	// for a ".json" name): node, static_resources and the ADS server.
	// BootstrapYAML is the same content in memory; setting both is an
	// error. Both may be empty when ADSAddress is set.
	Bootstrap     string
	BootstrapYAML []byte

	// ADSAddress, when set, is the xDS server's host:port; it overrides
	// the bootstrap's ads_config. Delta selects the incremental protocol
	// (the bootstrap's api_type may select it too).
	ADSAddress string
	Delta      bool

	// Node describes this workload to the control plane. Set fields win
	// over the bootstrap's node; unset ones default like Istio's agent
	// (sidecar~127.0.0.1~HOST.default~default.svc.cluster.local). The
	// process environment is never read.
	Node xds.Node

	// Identity, when set, is the workload certificate source: cluster TLS
	// contexts that name Istio's agent SDS secrets ("default", "ROOTCA")
	// use it, HBONE clusters tunnel with it, and Listen requires it. The
	// caller owns it (Close does not close it).
	Identity identity.Source

	// RouteConfig, when set, names the route configuration every request
	// of RoundTripper is routed with (subscribed over RDS even if no
	// listener references it). If a listener's connection manager uses
	// it, that manager's HTTP filters (fault, RBAC, rate limit, GCP authn)
	// and settings apply too. When empty, a request is routed by the
	// connection manager of OutboundListener, else of the listener for
	// its destination port, else by the route configuration named after
	// that port (Istio's outbound naming, e.g. "8080").
	RouteConfig string
	// OutboundListener, when set, names the listener whose HTTP connection
	// manager serves RoundTripper requests (when RouteConfig is empty).
	OutboundListener string
	// InboundListener names the listener whose network RBAC filters Listen
	// applies to accepted connections. Empty applies none (mTLS only); a
	// name not in the configuration denies every connection.
	InboundListener string

	// DebugHeaders adds x-meshlet-response-flags and x-meshlet-upstream to
	// every response, as the proxy's --debug-headers does.
	DebugHeaders bool

	// Logger defaults to slog.Default().
	Logger *slog.Logger

	mu     sync.Mutex
	rt     atomic.Pointer[runtime]
	frozen *Server // copy of the exported fields at first use
	err    error   // sticky start-up error
	closed bool
}

// ErrFrozen is returned by Start when an exported field was changed after
// the Server's first use: the change has no effect.
var ErrFrozen = errors.New("meshlet: options changed after first use")

// ErrClosed is returned by every method of a closed Server.
var ErrClosed = errors.New("meshlet: server closed")

// snapshotOptions copies the exported fields.
func (s *Server) snapshotOptions() *Server {
	return &Server{
		Bootstrap: s.Bootstrap, BootstrapYAML: bytes.Clone(s.BootstrapYAML),
		ADSAddress: s.ADSAddress, Delta: s.Delta, Node: s.Node, Identity: s.Identity,
		RouteConfig: s.RouteConfig, OutboundListener: s.OutboundListener,
		InboundListener: s.InboundListener, DebugHeaders: s.DebugHeaders, Logger: s.Logger,
	}
}

// changedField names the first exported field that differs from the
// frozen copy, "" when none.
func (s *Server) changedField() string {
	f := s.frozen
	switch {
	case s.Bootstrap != f.Bootstrap:
		return "Bootstrap"
	case !bytes.Equal(s.BootstrapYAML, f.BootstrapYAML):
		return "BootstrapYAML"
	case s.ADSAddress != f.ADSAddress:
		return "ADSAddress"
	case s.Delta != f.Delta:
		return "Delta"
	case !reflect.DeepEqual(s.Node, f.Node):
		return "Node"
	case !sameValue(s.Identity, f.Identity):
		return "Identity"
	case s.RouteConfig != f.RouteConfig:
		return "RouteConfig"
	case s.OutboundListener != f.OutboundListener:
		return "OutboundListener"
	case s.InboundListener != f.InboundListener:
		return "InboundListener"
	case s.DebugHeaders != f.DebugHeaders:
		return "DebugHeaders"
	case s.Logger != f.Logger:
		return "Logger"
	}
	return ""
}

// sameValue compares interface values without panicking on
// non-comparable dynamic types (those compare by identity of nothing, so
// they are treated as unchanged).
func sameValue(a, b any) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	if reflect.TypeOf(a) != reflect.TypeOf(b) {
		return false
	}
	if !reflect.TypeOf(a).Comparable() {
		return true
	}
	return a == b
}

// Start starts the Server if it has not started yet, then waits until the
// first xDS configuration arrived (when ADS is configured) or ctx ends.
// Background work lives until Close, not until ctx ends. Calling Start
// again is cheap; it returns ErrFrozen if a field changed since the first
// use.
func (s *Server) Start(ctx context.Context) error {
	rt, err := s.runtime()
	if err != nil {
		return err
	}
	s.mu.Lock()
	changed := s.changedField()
	s.mu.Unlock()
	if err := rt.waitReady(ctx); err != nil {
		return err
	}
	if changed != "" {
		return fmt.Errorf("%w: %s", ErrFrozen, changed)
	}
	return nil
}

// use starts the Server lazily and waits for its first configuration:
// the entry of every data-path method.
func (s *Server) use(ctx context.Context) (*runtime, error) {
	rt, err := s.runtime()
	if err != nil {
		return nil, err
	}
	if err := rt.waitReady(ctx); err != nil {
		return nil, err
	}
	return rt, nil
}

// runtime returns the running state, starting it on first use.
func (s *Server) runtime() (*runtime, error) {
	if rt := s.rt.Load(); rt != nil {
		return rt, nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if rt := s.rt.Load(); rt != nil {
		return rt, nil
	}
	if s.err != nil {
		return nil, s.err
	}
	s.frozen = s.snapshotOptions()
	rt, err := start(s.frozen)
	if err != nil {
		s.err = err
		return nil, err
	}
	s.rt.Store(rt)
	return rt, nil
}

// Close stops xDS, closes the listeners Listen returned and the upstream
// connection pools. Requests in flight fail. Close is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	rt := s.rt.Swap(nil)
	s.mu.Unlock()
	if rt == nil {
		return nil
	}
	return rt.close()
}
