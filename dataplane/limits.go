package dataplane

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/meshlet/meshlet/state"
)

// connLimiter is one connection_limit filter's count of open connections.
// Like Envoy's filter config it is shared by every connection of the chain
// and survives listener updates that keep the same limit, so a push does
// not reset the count and let a second batch of connections in.
type connLimiter struct {
	spec   state.ConnectionLimit
	active atomic.Int64
}

func newConnLimiters(specs []*state.ConnectionLimit) []*connLimiter {
	if len(specs) == 0 {
		return nil
	}
	out := make([]*connLimiter, len(specs))
	for i, s := range specs {
		out[i] = &connLimiter{spec: *s}
	}
	return out
}

// acquireConns counts a new connection against each of the chain's
// connection limits in order. When one is full the counts taken so far are
// returned and the limiter that refused is reported, so the caller can
// apply its delay; later filters never see the connection, as in Envoy.
func (c *chainRuntime) acquireConns() (refused *connLimiter) {
	for i, l := range c.connLimits {
		if l.active.Add(1) > int64(l.spec.MaxConnections) {
			l.active.Add(-1)
			for _, prev := range c.connLimits[:i] {
				prev.active.Add(-1)
			}
			return l
		}
	}
	return nil
}

func (c *chainRuntime) releaseConns() {
	for _, l := range c.connLimits {
		l.active.Add(-1)
	}
}

// refuseOverLimit closes a connection refused by l, after l's delay (Envoy
// holds it open that long so that a client retrying at once is slowed
// down). The delay ends early when the listener is closed by force.
func (l *listener) refuseOverLimit(c net.Conn, cl *connLimiter) {
	l.stats.connLimited.Add(1)
	if d := cl.spec.Delay; d > 0 {
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-l.hard.Done():
			t.Stop()
		}
	}
	_ = c.Close()
}

// inheritConnLimiters keeps the limiters (and their counts) of old's chains
// for chains of c with the same name and limits.
func (c *listenerConfig) inheritConnLimiters(old *listenerConfig) {
	c.pairChains(old, func(prev, cur *chainRuntime) {
		if len(cur.connLimits) > 0 && sameSpecs(prev.spec.ConnectionLimits, cur.spec.ConnectionLimits) {
			cur.connLimits = prev.connLimits
		}
	})
}

// admitGlobal counts a newly accepted connection against
// Options.MaxConnections (Envoy's global_downstream_max_connections). It is
// checked before anything is read, so an overloaded proxy spends nothing
// more on the connection than accept and close.
func (s *Server) admitGlobal() bool {
	max := s.opts.MaxConnections
	if max <= 0 {
		return true
	}
	if s.globalConns.Add(1) > max {
		s.globalConns.Add(-1)
		return false
	}
	return true
}

func (s *Server) releaseGlobal() {
	if s.opts.MaxConnections > 0 {
		s.globalConns.Add(-1)
	}
}

// ActiveConnections is the number of open downstream connections counted
// for Options.MaxConnections (0 when there is no global limit).
func (s *Server) ActiveConnections() int64 { return s.globalConns.Load() }
