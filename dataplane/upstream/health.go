package upstream

import (
	"context"
	"math/rand/v2"
	"reflect"
	"sync"
	"time"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

// hcResult is the outcome of one probe, in Envoy's terms: a pass, an
// "active" failure (the host answered and said no: marks it unhealthy at
// once) or a "network" failure (no usable answer: counts toward
// unhealthy_threshold).
type hcResult int

const (
	hcPass hcResult = iota
	hcFailActive
	hcFailNetwork
)

// hcState is one host's active health-check state machine.
type hcState struct {
	failed bool
	// pending: the host has not been checked yet; one pass is enough to
	// mark it healthy (Envoy: "for the first check of a host, only a single
	// successful health check is required").
	pending                  bool
	healthyRun, unhealthyRun uint32
}

// apply feeds one result and reports whether the host changed between
// healthy and unhealthy.
func (s *hcState) apply(r hcResult, healthyThreshold, unhealthyThreshold uint32) bool {
	first := s.pending
	s.pending = false
	if r == hcPass {
		s.unhealthyRun = 0
		if !s.failed {
			return false
		}
		s.healthyRun++
		if first || s.healthyRun >= healthyThreshold {
			s.failed, s.healthyRun = false, 0
			return true
		}
		return false
	}
	s.healthyRun = 0
	if s.failed {
		return false
	}
	s.unhealthyRun++
	if r == hcFailActive || s.unhealthyRun >= unhealthyThreshold {
		s.failed, s.unhealthyRun = true, 0
		return true
	}
	return false
}

// nextInterval picks the wait before the next probe the way Envoy does:
// no_traffic(_healthy)_interval while the cluster has seen no traffic,
// the edge intervals right after a transition, unhealthy_interval while
// down, else interval; plus interval_jitter and interval_jitter_percent.
func nextInterval(cfg *state.HealthCheck, s *hcState, changed, traffic bool, jitter func(time.Duration) time.Duration) time.Duration {
	var base time.Duration
	switch {
	case !traffic:
		base = cfg.NoTrafficInterval
		if !s.failed && cfg.NoTrafficHealthyInterval > 0 {
			base = cfg.NoTrafficHealthyInterval
		}
	case s.failed && changed:
		base = cfg.UnhealthyEdgeInterval
	case s.failed:
		base = cfg.UnhealthyInterval
	case changed:
		base = cfg.HealthyEdgeInterval
	default:
		base = cfg.Interval
	}
	if base <= 0 {
		base = cfg.Interval
	}
	d := base
	if cfg.IntervalJitterPercent > 0 {
		d += jitter(base * time.Duration(cfg.IntervalJitterPercent) / 100)
	}
	if cfg.IntervalJitter > 0 {
		d += jitter(cfg.IntervalJitter)
	}
	return d
}

func randJitter(max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	return rand.N(max)
}

// healthChecker runs one probing goroutine per host of a cluster while
// the cluster has a health check configured.
type healthChecker struct {
	c *Cluster

	mu       sync.Mutex
	cfg      *state.HealthCheck
	sessions map[*lb.Host]*hcSession
}

type hcSession struct {
	cancel context.CancelFunc
	done   chan struct{}
}

func newHealthChecker(c *Cluster) *healthChecker {
	return &healthChecker{c: c, sessions: map[*lb.Host]*hcSession{}}
}

// configure installs the cluster's health check (nil for none). A changed
// check restarts every session; removing it returns every host to what
// EDS says.
func (hc *healthChecker) configure(checks []state.HealthCheck) {
	var cfg *state.HealthCheck
	if len(checks) > 0 {
		cfg = &checks[0]
	}
	hc.mu.Lock()
	if cfg == hc.cfg || (cfg != nil && hc.cfg != nil && reflect.DeepEqual(*cfg, *hc.cfg)) {
		hc.mu.Unlock()
		return
	}
	old := hc.sessions
	hc.sessions = map[*lb.Host]*hcSession{}
	hc.cfg = cfg
	hc.mu.Unlock()
	stopSessions(old)
	hc.c.LB.SetNewHostsHealthCheckFailed(cfg != nil)
	if cfg == nil {
		changed := false
		for h := range old {
			changed = h.SetHealthCheckFailed(false) || changed
		}
		if changed {
			hc.c.LB.Rebuild()
		}
		return
	}
	hc.setHosts(hc.c.LB.Hosts())
}

// setHosts starts sessions for new hosts and stops those of removed ones.
func (hc *healthChecker) setHosts(hosts []*lb.Host) {
	hc.mu.Lock()
	if hc.cfg == nil {
		hc.mu.Unlock()
		return
	}
	keep := make(map[*lb.Host]bool, len(hosts))
	for _, h := range hosts {
		keep[h] = true
		if hc.sessions[h] == nil {
			hc.sessions[h] = hc.start(hc.cfg, h)
		}
	}
	gone := map[*lb.Host]*hcSession{}
	for h, s := range hc.sessions {
		if !keep[h] {
			gone[h] = s
			delete(hc.sessions, h)
		}
	}
	hc.mu.Unlock()
	stopSessions(gone)
}

func (hc *healthChecker) stop() {
	hc.mu.Lock()
	old := hc.sessions
	hc.sessions = map[*lb.Host]*hcSession{}
	hc.cfg = nil
	hc.mu.Unlock()
	stopSessions(old)
}

func stopSessions(m map[*lb.Host]*hcSession) {
	for _, s := range m {
		s.cancel()
	}
	for _, s := range m {
		<-s.done
	}
}

func (hc *healthChecker) start(cfg *state.HealthCheck, h *lb.Host) *hcSession {
	ctx, cancel := context.WithCancel(context.Background())
	s := &hcSession{cancel: cancel, done: make(chan struct{})}
	go hc.run(ctx, s.done, cfg, h)
	return s
}

func (hc *healthChecker) run(ctx context.Context, done chan struct{}, cfg *state.HealthCheck, h *lb.Host) {
	defer close(done)
	p := newProber(hc.c, cfg, h)
	defer p.close()
	st := hcState{failed: h.HealthCheckFailed()}
	st.pending = st.failed
	wait := randJitter(cfg.InitialJitter)
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		r := p.probe(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		changed := st.apply(r, cfg.HealthyThreshold, cfg.UnhealthyThreshold)
		if changed {
			if h.SetHealthCheckFailed(st.failed) {
				hc.c.LB.Rebuild()
			}
			hc.c.log.Info("active health check changed host state", "host", h.Address, "healthy", !st.failed)
		}
		if r == hcPass {
			if od := hc.c.od.cfg.Load(); od != nil && od.SuccessfulActiveHealthCheckUnejectHost {
				hc.c.od.uneject(h)
			}
		}
		t.Reset(nextInterval(cfg, &st, changed, hc.c.traffic.Load(), randJitter))
	}
}
