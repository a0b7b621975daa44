package httpproxy

import (
	"context"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// Response flags set by the HTTP filters.
const (
	FlagDelayInjected = "DI"
	FlagFaultInjected = "FI"
	FlagRateLimited   = "RL"
)

// Local reply bodies of the HTTP filters (Envoy's wording).
const (
	BodyFaultAbort       = "fault filter abort"
	BodyLocalRateLimited = "local_rate_limited"
)

// runFilters runs the connection manager's HTTP filters (fault, local rate
// limit) in their configured order on a request decide has routed, as
// Envoy runs them before the router. A filter may turn d into a local reply
// (abort, rate limited) or delay the request; both codecs call it right
// after decide and then act on d as usual. It returns false when the
// downstream went away during a delay: the caller drops the request
// without answering.
//
// A delay ends early when ctx is done (HTTP/2: the stream's context) or,
// with conn set (HTTP/1.1), when the client closes the connection.
func (p *Proxy) runFilters(ctx context.Context, hcm *state.HTTPConnectionManager, r policy.Request, d *decision, conn net.Conn) bool {
	if len(hcm.Filters) == 0 || d.early {
		return true
	}
	for _, f := range hcm.Filters {
		if f.GCPAuthn != nil {
			if p.runGCPAuthn(ctx, f, r, d) {
				return true
			}
			continue
		}
		if f.RBAC != nil {
			if p.runRBAC(hcm, f, r, d) {
				return true
			}
			continue
		}
		fault, rl := f.Fault, f.LocalRateLimit
		disabled := f.Disabled
		if o := d.filterOverride(f.Name); o != nil {
			fault, rl, disabled = o.Fault, o.LocalRateLimit, o.Disabled
		}
		if disabled {
			continue
		}
		switch {
		case fault != nil:
			stop, ok := p.fault(ctx, fault, r, d, conn)
			if !ok {
				return false
			}
			if stop {
				return true
			}
		case rl != nil:
			if p.rateLimit(rl, d) {
				return true
			}
		}
	}
	return true
}

// filterOverride returns the most specific typed_per_filter_config for the
// filter named name, in Envoy's order: the picked weighted cluster entry,
// the route, the virtual host, the route configuration.
func (d *decision) filterOverride(name string) *state.FilterOverride {
	if d.wc != nil {
		if o := d.wc.FilterOverrides[name]; o != nil {
			return o
		}
	}
	if d.route != nil {
		if o := d.route.FilterOverrides[name]; o != nil {
			return o
		}
	}
	if d.vh != nil {
		if o := d.vh.FilterOverrides[name]; o != nil {
			return o
		}
	}
	if d.rc != nil {
		if o := d.rc.FilterOverrides[name]; o != nil {
			return o
		}
	}
	return nil
}

// faultState is the runtime state of one fault config.
type faultState struct {
	active atomic.Int64
}

var faultStates sideTable[state.FaultFilter, faultState]

// releaseFaults ends the fault held by d's request (max_active_faults).
func (d *decision) releaseFaults() {
	if d.faultHeld != nil {
		d.faultHeld.active.Add(-1)
		d.faultHeld = nil
	}
}

func newFaultState(*state.FaultFilter) *faultState { return &faultState{} }

// fault applies one fault config: delay first, then abort, as Envoy's
// fault filter does. stop reports that d became a local reply; ok false
// means the client left during the delay.
func (p *Proxy) fault(ctx context.Context, f *state.FaultFilter, r policy.Request, d *decision, conn net.Conn) (stop, ok bool) {
	if !policy.FaultApplies(f, d.clusterName, r) {
		return false, true
	}
	var st *faultState
	if f.HasMaxActive {
		st = faultStates.get(f, newFaultState)
		// Like Envoy's check this is fuzzy under races: it reads the gauge
		// and increments later, which is what a circuit breaker does too.
		if st.active.Load() >= int64(f.MaxActiveFaults) {
			return false, true
		}
	}
	delay := policy.FaultDelay(f.Delay, r, rand.Uint64())
	abort, aborting := policy.Abort{}, false
	if delay == 0 {
		abort, aborting = policy.FaultAbort(f.Abort, r, rand.Uint64())
		if !aborting {
			return false, true
		}
	}
	if st != nil {
		// Envoy counts a fault as active until its request ends, not only
		// while the delay runs: the codecs call d.releaseFaults then.
		st.active.Add(1)
		if d.faultHeld == nil {
			d.faultHeld = st
		} else {
			defer st.active.Add(-1) // a second fault filter: rare, kept short
		}
	}
	if delay > 0 {
		d.delayed = true
		if d.local() {
			d.flags = joinFlags(d.flags)
		} else {
			d.flags = FlagDelayInjected
		}
		if !waitDelay(ctx, delay, conn) {
			return true, false
		}
		abort, aborting = policy.FaultAbort(f.Abort, r, rand.Uint64())
		if !aborting {
			return false, true
		}
	}
	d.setLocal(abort.HTTPStatus, FlagFaultInjected, BodyFaultAbort)
	d.location = ""
	d.filterMut = nil
	if abort.GRPC {
		d.grpcStatus, d.hasGRPCStatus = int(abort.GRPCStatus), true
	}
	return true, true
}

// waitDelay sleeps for delay unless the downstream goes away first.
func waitDelay(ctx context.Context, delay time.Duration, conn net.Conn) bool {
	t := time.NewTimer(delay)
	defer t.Stop()
	done := ctx.Done()
	var tick <-chan time.Time
	if conn != nil && canPollClosed(conn) {
		tk := time.NewTicker(delayPollInterval)
		defer tk.Stop()
		tick = tk.C
	}
	for {
		select {
		case <-t.C:
			return true
		case <-done:
			return false
		case <-tick:
			if peerClosed(conn) {
				return false
			}
		}
	}
}

// delayPollInterval is how often an HTTP/1.1 connection is checked for the
// client's close during a fault delay: the codec reads nothing while the
// request waits, so without polling a cancelled request would hold its
// goroutine for the whole delay.
const delayPollInterval = 50 * time.Millisecond

// joinFlags adds DI to the flags of a reply, in Envoy's flag order (DI sorts
// after the upstream failure flags and before FI and RL).
func joinFlags(flags string) string {
	switch flags {
	case "", FlagDelayInjected:
		return FlagDelayInjected
	case FlagFaultInjected, FlagRateLimited:
		return FlagDelayInjected + "," + flags
	}
	return flags + "," + FlagDelayInjected
}
