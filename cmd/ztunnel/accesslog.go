package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/telemetry"
)

// accessLogs connects the access_log entries of the HTTP connection
// managers and tcp_proxy filters in the configuration to the data plane.
//
// Each record carries the config of the filter chain that accepted its
// connection (HTTPRecord.HCM, TCPRecord.TCP), so routing a record to its
// logs is a pointer read: a connection keeps logging as the chain it was
// accepted by says, also after a push replaced that chain, like Envoy's
// draining filter chains. What the snapshot decides is whether any log is
// configured at all (the hot path is one atomic load when none is) and
// which destinations stay open (writers are shared per path and closed
// when no listener names them any more).
type accessLogs struct {
	logger *telemetry.AccessLogger
	log    *slog.Logger
	// active is set while some filter chain has an access log.
	active atomic.Bool
}

// newAccessLogs starts following store. Close it after the data plane
// stopped so the last records are written.
func newAccessLogs(store *state.Store, log *slog.Logger) *accessLogs {
	a := &accessLogs{logger: telemetry.NewAccessLogger(telemetry.AccessLogOptions{Log: log}), log: log}
	store.Watch(func(_, next *state.Snapshot) { a.update(next) })
	return a
}

// update runs under the store's update lock on every push: it recomputes
// the live destinations and releases the rest.
func (a *accessLogs) update(snap *state.Snapshot) {
	live := map[string]bool{}
	for _, l := range snap.Listeners {
		for _, fc := range l.FilterChains {
			chainLogs(fc, live)
		}
		chainLogs(l.DefaultFilterChain, live)
	}
	a.active.Store(len(live) > 0)
	if err := a.logger.Retain(live); err != nil {
		a.log.Warn("access log: closing a retired destination", "err", err)
	}
}

func chainLogs(fc *state.FilterChain, live map[string]bool) {
	if fc == nil {
		return
	}
	if fc.HTTP != nil {
		telemetry.Destinations(fc.HTTP.AccessLogs, live)
	}
	if fc.TCPProxy != nil {
		telemetry.Destinations(fc.TCPProxy.AccessLogs, live)
	}
}

// HTTPDone implements telemetry.Sink.
func (a *accessLogs) HTTPDone(r *telemetry.HTTPRecord) {
	if a.active.Load() {
		a.logger.HTTPDone(r)
	}
}

// TCPDone implements telemetry.Sink.
func (a *accessLogs) TCPDone(r *telemetry.TCPRecord) {
	if a.active.Load() {
		a.logger.TCPDone(r)
	}
}

// stats are the logger's counters for /stats.
func (a *accessLogs) stats(out map[string]uint64) {
	if a == nil {
		return
	}
	st := a.logger.Stats()
	out["access_log.lines_written"] = st.Written
	out["access_log.lines_dropped"] = st.Dropped
	out["access_log.lines_failed"] = st.Failed
}

// close flushes and closes every destination; nil-safe.
func (a *accessLogs) close() {
	if a == nil {
		return
	}
	a.active.Store(false)
	if err := a.logger.Close(); err != nil {
		a.log.Warn("access log: close", "err", err)
	}
}

// notifyReopen starts catching SIGUSR1 (whose default action would kill
// the process) before anything is served; reopenOnSignal consumes it.
func notifyReopen() chan os.Signal {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	return ch
}

// reopenOnSignal reopens the access log files on each signal from ch
// (SIGUSR1, as in Envoy; the same as POST /reopen_logs) until ctx ends.
func (a *accessLogs) reopenOnSignal(ctx context.Context, ch chan os.Signal) {
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				a.logger.Reopen()
				a.log.Info("access logs reopened (SIGUSR1)")
			}
		}
	}()
}
