package dataplane

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshlet/meshlet/dataplane/httpproxy"
	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/telemetry"
)

// DefaultDrainTimeout bounds how long a removed listener's connections may
// keep going.
const DefaultDrainTimeout = 10 * time.Second

// Options configure a Server.
type Options struct {
	// DrainTimeout is how long connections of a removed or re-addressed
	// listener (or of all listeners at Shutdown) may run before they are
	// closed. Default DefaultDrainTimeout.
	DrainTimeout time.Duration
	Log          *slog.Logger
	// Sink receives a record of every finished tcp_proxy connection
	// (metrics, access logs); nil turns recording off. HTTP requests are
	// recorded by httpproxy.Options.Sink.
	Sink telemetry.Sink
	// Inherited are listening sockets from a previous process (handoff.go),
	// keyed by HandoffKey; a listener takes its socket instead of binding.
	Inherited map[string]*net.TCPListener
	// MaxConnections caps open downstream connections over all listeners
	// (limits.go); 0 is unlimited.
	MaxConnections int64
	// Transparent, when set, opens a listener's socket with IP_TRANSPARENT
	// when it returns true for the spec (besides listeners whose spec asks
	// for it): ztunnel's --capture-inbound=tproxy makes the inbound
	// listener transparent whatever the control plane sent.
	Transparent func(*state.Listener) bool
}

// Server runs the listeners of the current snapshot.
type Server struct {
	store    *state.Store
	clusters *upstream.Manager
	http     *httpproxy.Proxy
	opts     Options
	log      *slog.Logger

	// index maps addresses to live listeners for use_original_dst. Bound
	// listeners are indexed by the address they actually bound (port 0
	// resolved), virtual ones by their configured address.
	index atomic.Pointer[map[netip.AddrPort][]*listener]

	mu      sync.Mutex // serializes reconcile and Shutdown
	started bool
	closed  bool
	live    map[string]*listener
	all     map[*listener]struct{} // live and draining
	stats   map[string]*listenerCounters
	errs    map[string]string

	// warming records since when a listener has waited for its RDS route
	// configurations (see warm).
	warming map[string]time.Time

	inheritMu   sync.Mutex   // guards opts.Inherited
	globalConns atomic.Int64 // open connections, for MaxConnections
	gateways    gatewaySet   // running SNI gateways, for Stats (gateway.go)

	// wg counts every goroutine the server starts: accept loops,
	// connection handlers and drain waiters.
	wg sync.WaitGroup
}

// New returns a Server for the listeners in store. clusters serves tcp_proxy
// and http serves HTTP connection manager chains (nil closes such
// connections).
func New(store *state.Store, clusters *upstream.Manager, http *httpproxy.Proxy, opts Options) *Server {
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = DefaultDrainTimeout
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	s := &Server{
		store:    store,
		clusters: clusters,
		http:     http,
		opts:     opts,
		log:      opts.Log,
		live:     map[string]*listener{},
		all:      map[*listener]struct{}{},
		stats:    map[string]*listenerCounters{},
		errs:     map[string]string{},
	}
	empty := map[netip.AddrPort][]*listener{}
	s.index.Store(&empty)
	return s
}

// Start binds the listeners of the current snapshot and follows the store.
// Listeners that fail to bind are reported by Errors; they do not make Start
// fail.
func (s *Server) Start() error {
	s.mu.Lock()
	if s.started || s.closed {
		s.mu.Unlock()
		return nil
	}
	s.started = true
	s.mu.Unlock()
	s.store.Watch(func(_, next *state.Snapshot) { s.reconcile(next) })
	return nil
}

// Addr returns the bound address of the named listener, or nil when it has
// no socket.
func (s *Server) Addr(name string) net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.live[name]
	if l == nil || l.ln == nil {
		return nil
	}
	return l.ln.Addr()
}

// Errors returns the last bind or configuration error per listener name, for
// listeners of the current snapshot that have one.
func (s *Server) Errors() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.errs))
	for k, v := range s.errs {
		out[k] = v
	}
	return out
}

// Stats returns the counters of every listener that is live or still
// draining.
func (s *Server) Stats() map[string]ListenerStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]ListenerStats, len(s.stats))
	for name, c := range s.stats {
		out[name] = c.snapshot()
	}
	s.gateways.addStats(out)
	return out
}

// Shutdown stops accepting on every listener and drains their connections:
// HTTP connections are asked to finish, TCP proxies run until done or
// DrainTimeout. When ctx ends first the remaining connections are closed and
// ctx's error returned. Shutdown returns once every goroutine of the server
// has ended.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		for _, l := range s.live {
			s.retire(l)
		}
		s.live = map[string]*listener{}
		s.publishIndex()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for l := range s.all {
			l.forceClose()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// reconcile makes the running listeners match snap. It runs under the
// store's update lock, so it only binds and closes sockets; waiting for
// drains happens in the background.
// warmingTimeout is how long a listener waits for its RDS routes before it
// starts anyway (Envoy's initial_fetch_timeout default).
const warmingTimeout = 15 * time.Second

// warm reports whether every RDS route configuration spec's HTTP chains
// name is in snap. A listener still warming after warmingTimeout is
// treated as warm (its requests then get 404 NR, as in Envoy); a timer
// reconciles again at that point since no snapshot change may come.
// Called with s.mu held.
func (s *Server) warm(name string, spec *state.Listener, snap *state.Snapshot) bool {
	missing := false
	check := func(fc *state.FilterChain) {
		if fc != nil && fc.HTTP != nil && fc.HTTP.RDSName != "" && snap.Routes[fc.HTTP.RDSName] == nil {
			missing = true
		}
	}
	for _, fc := range spec.FilterChains {
		check(fc)
	}
	check(spec.DefaultFilterChain)
	if !missing {
		delete(s.warming, name)
		return true
	}
	if s.warming == nil {
		s.warming = map[string]time.Time{}
	}
	since, ok := s.warming[name]
	if !ok {
		s.warming[name] = time.Now()
		time.AfterFunc(warmingTimeout, func() { s.reconcile(s.store.Load()) })
		return false
	}
	return time.Since(since) >= warmingTimeout
}

func (s *Server) reconcile(snap *state.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	// Retire removed and re-addressed listeners first so their ports are
	// free for the listeners that replace them.
	for name, l := range s.live {
		spec := snap.Listeners[name]
		if spec == nil || !sameSocket(l.spec(), spec) {
			s.retire(l)
			delete(s.live, name)
		}
	}
	names := make([]string, 0, len(snap.Listeners))
	for name, spec := range snap.Listeners {
		if spec.Internal != nil {
			continue // internal listeners are run by the HBONE client (state.InternalListener)
		}
		names = append(names, name)
	}
	slices.Sort(names) // deterministic bind order and error reporting
	next := make(map[string]*listener, len(names))
	for _, name := range names {
		spec := snap.Listeners[name]
		if !s.warm(name, spec, snap) {
			// Like Envoy's listener warming: a new listener is not bound,
			// and a changed one keeps its old config, until the route
			// configurations it names over RDS have arrived.
			if l := s.live[name]; l != nil {
				next[name] = l
			}
			continue
		}
		if l := s.live[name]; l != nil {
			next[name] = l
			if l.spec() == spec {
				continue
			}
			cfg, err := compileListenerWith(spec, s.identity())
			if err != nil {
				// Keep serving the last good config, like an xDS NACK.
				s.fail(name, err)
				continue
			}
			cfg.inheritLimits(l.cfg.Load())
			cfg.inheritConnLimiters(l.cfg.Load())
			l.cfg.Store(cfg)
			l.recheckRBAC(cfg)
			delete(s.errs, name)
			continue
		}
		cfg, err := compileListenerWith(spec, s.identity())
		if err != nil {
			s.fail(name, err)
			continue
		}
		stats := s.stats[name]
		if stats == nil {
			stats = &listenerCounters{}
			s.stats[name] = stats
		}
		l, err := s.openListener(cfg, stats)
		if err != nil {
			s.fail(name, err)
			continue
		}
		s.all[l] = struct{}{}
		next[name] = l
		delete(s.errs, name)
		s.log.Info("listener started", "listener", name, "address", l.bound, "bind", spec.BindToPort)
	}
	for name := range s.errs {
		if snap.Listeners[name] == nil {
			delete(s.errs, name)
		}
	}
	s.live = next
	s.publishIndex()
	s.pruneStats()
}

func (s *Server) fail(name string, err error) {
	s.errs[name] = err.Error()
	s.log.Error("listener not updated", "listener", name, "err", err)
}

// sameSocket reports whether b can reuse a's socket: same address and both
// bound or both virtual.
func sameSocket(a, b *state.Listener) bool {
	return a.Address == b.Address && a.BindToPort == b.BindToPort
}

// retire starts draining l and waits for it in the background. Callers hold
// s.mu.
func (s *Server) retire(l *listener) {
	l.startDrain()
	s.log.Info("listener draining", "listener", l.name, "address", l.bound)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		l.awaitDrain(s.opts.DrainTimeout)
		s.mu.Lock()
		delete(s.all, l)
		s.pruneStats()
		s.mu.Unlock()
	}()
}

// pruneStats forgets the counters of names that are neither live nor
// draining. Callers hold s.mu.
func (s *Server) pruneStats() {
	for name := range s.stats {
		if s.live[name] != nil {
			continue
		}
		keep := false
		for l := range s.all {
			if l.name == name {
				keep = true
				break
			}
		}
		if !keep {
			delete(s.stats, name)
		}
	}
}

// publishIndex rebuilds the address index from s.live. Callers hold s.mu.
func (s *Server) publishIndex() {
	idx := make(map[netip.AddrPort][]*listener, len(s.live))
	names := make([]string, 0, len(s.live))
	for name := range s.live {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		l := s.live[name]
		idx[l.bound] = append(idx[l.bound], l)
	}
	s.index.Store(&idx)
}

// lookupListener finds the listener that owns original destination dst for
// a connection accepted by self: an exact address match, else a wildcard
// listener on dst's port, other than self. It returns self when there is
// none.
func (s *Server) lookupListener(dst netip.AddrPort, self *listener) *listener {
	idx := *s.index.Load()
	dst = canonAddrPort(dst)
	for _, l := range idx[dst] {
		if l != self {
			return l
		}
	}
	any := netip.IPv6Unspecified()
	if dst.Addr().Is4() {
		any = netip.IPv4Unspecified()
	}
	for _, l := range idx[netip.AddrPortFrom(any, dst.Port())] {
		if l != self {
			return l
		}
	}
	return self
}
