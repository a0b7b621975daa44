package dataplane

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshlet/meshlet/state"
)

// listener is one version of an xDS listener's socket: a bound TCP socket
// with its accept loop, or a virtual (bind_to_port: false) listener that only
// receives connections handed over by use_original_dst. Its config may be
// swapped while the socket stays; a new socket means a new listener value.
type listener struct {
	s     *Server
	name  string
	ln    *net.TCPListener // nil for virtual listeners
	bound netip.AddrPort   // address the index knows it by
	cfg   atomic.Pointer[listenerConfig]
	stats *listenerCounters

	// ctx is cancelled when draining starts: httpproxy.ServeConn treats it
	// as "finish gracefully". hard is cancelled when open connections are
	// closed by force; dials in progress stop then.
	ctx, hard          context.Context
	cancel, hardCancel context.CancelFunc
	acceptDone         chan struct{}

	mu       sync.Mutex
	conns    map[*net.TCPConn]struct{}
	draining bool
	idle     chan struct{} // closed once draining with no connections left

	// rbac tracks open connections for network RBAC re-checks (rbac.go).
	rbac rbacConns
}

// openListener binds spec's socket (when BindToPort) and starts accepting.
func (s *Server) openListener(cfg *listenerConfig, stats *listenerCounters) (*listener, error) {
	spec := cfg.spec
	l := &listener{
		s:          s,
		name:       spec.Name,
		bound:      canonAddrPort(spec.Address),
		stats:      stats,
		acceptDone: make(chan struct{}),
		conns:      map[*net.TCPConn]struct{}{},
		idle:       make(chan struct{}),
	}
	l.cfg.Store(cfg)
	if spec.BindToPort {
		// An IPv4 address gets an IPv4-only socket like Envoy's, instead of
		// Go's dual-stack default for wildcard addresses. Go sets
		// SO_REUSEADDR on listening sockets, so a port whose previous
		// listener just closed (connections in TIME_WAIT) rebinds at once.
		network := "tcp6"
		if spec.Address.Addr().Unmap().Is4() {
			network = "tcp4"
		}
		addr := net.TCPAddrFromAddrPort(netip.AddrPortFrom(spec.Address.Addr().Unmap(), spec.Address.Port()))
		ln, err := s.listenTCP(spec, network, addr)
		if err != nil {
			return nil, fmt.Errorf("listener %q: bind %s: %w", spec.Name, spec.Address, err)
		}
		l.ln = ln
		l.bound = canonAddrPort(ln.Addr().(*net.TCPAddr).AddrPort())
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.hard, l.hardCancel = context.WithCancel(context.Background())
	if l.ln != nil {
		s.wg.Add(1)
		go l.acceptLoop()
	} else {
		close(l.acceptDone)
	}
	return l, nil
}

func (l *listener) spec() *state.Listener { return l.cfg.Load().spec }

func (l *listener) acceptLoop() {
	defer l.s.wg.Done()
	defer close(l.acceptDone)
	var delay time.Duration
	for {
		c, err := l.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off instead of
			// spinning, as net/http does.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.s.log.Warn("accept failed; retrying", "listener", l.name, "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		l.s.wg.Add(1)
		go l.s.handle(l, c)
	}
}

// track registers an open connection; it fails once the listener drains.
func (l *listener) track(c *net.TCPConn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.draining {
		return false
	}
	l.conns[c] = struct{}{}
	l.stats.accepted.Add(1)
	l.stats.active.Add(1)
	return true
}

func (l *listener) untrack(c *net.TCPConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.conns[c]; !ok {
		return
	}
	delete(l.conns, c)
	l.stats.active.Add(-1)
	if l.draining {
		l.stats.drained.Add(1)
		if len(l.conns) == 0 {
			close(l.idle)
		}
	}
}

// startDrain stops accepting at once and asks open connections to finish.
func (l *listener) startDrain() {
	l.mu.Lock()
	if l.draining {
		l.mu.Unlock()
		return
	}
	l.draining = true
	if len(l.conns) == 0 {
		close(l.idle)
	}
	l.mu.Unlock()
	if l.ln != nil {
		_ = l.ln.Close()
	}
	l.cancel()
}

// awaitDrain waits for the open connections to end, closing the rest after
// timeout.
func (l *listener) awaitDrain(timeout time.Duration) {
	<-l.acceptDone
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-l.idle:
	case <-t.C:
		l.mu.Lock()
		n := len(l.conns)
		l.mu.Unlock()
		l.s.log.Info("listener drain timed out; closing connections", "listener", l.name, "connections", n)
		l.forceClose()
		<-l.idle
	}
	l.hardCancel()
}

// forceClose closes every open connection of the listener.
func (l *listener) forceClose() {
	l.hardCancel()
	l.mu.Lock()
	defer l.mu.Unlock()
	for c := range l.conns {
		_ = c.Close()
	}
}

// canonAddrPort unmaps IPv4-mapped addresses so that index lookups compare
// like with like.
func canonAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
