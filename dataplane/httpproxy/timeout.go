package httpproxy

import (
	"time"

	"github.com/meshlet/meshlet/policy"
)

// Timeout reply text Envoy uses when max_stream_duration (or the
// grpc-timeout derived stream duration, gRFC A31) expires before the
// response: 408, and for gRPC DEADLINE_EXCEEDED.
const BodyDurationTimeout = "downstream duration timeout"

// requestTimeouts are the timers of one request, fixed when it is routed.
type requestTimeouts struct {
	// global is the router timeout over all attempts (0 = none).
	global time.Duration
	// perTry and perTryIdle bound each attempt (0 = none).
	perTry, perTryIdle time.Duration
	// stream is max_stream_duration (A31 semantics); hasStream says it
	// applies.
	stream    time.Duration
	hasStream bool
	// idle is the stream idle timeout: the route's idle_timeout when set,
	// else the connection manager's.
	idle time.Duration
}

// computeTimeouts fills t for decision d and request r (grpc says r is a
// gRPC request; its grpc-timeout header feeds A31).
func computeTimeouts(t *requestTimeouts, d *decision, r policy.Request, grpc bool, hcmIdle time.Duration) {
	*t = requestTimeouts{idle: hcmIdle}
	a := d.action
	if a == nil {
		return
	}
	var gt time.Duration
	hasGT := false
	if grpc {
		if v, ok := r.Header("grpc-timeout"); ok {
			gt, hasGT = parseGRPCTimeout(v)
		}
	}
	t.global = policy.RouteTimeout(a, grpc, gt, hasGT)
	t.stream, t.hasStream = policy.StreamDuration(a, gt, hasGT)
	if !a.MaxStreamDurationSet && d.hcmStream > 0 {
		t.stream, t.hasStream = d.hcmStream, true
	}
	rp := policy.EffectiveRetryPolicy(d.vh, a)
	t.perTry = policy.PerTryTimeout(rp, t.global)
	if rp != nil {
		t.perTryIdle = rp.PerTryIdleTimeout
	}
	if a.IdleTimeout > 0 {
		t.idle = a.IdleTimeout
	}
}

// overall returns the deadline for the whole request from start: the
// earlier of the router timeout and the stream duration, and whether it
// is the stream duration's (a different reply).
func (t *requestTimeouts) overall(start time.Time) (dl time.Time, stream bool) {
	if t.global > 0 {
		dl = start.Add(t.global)
	}
	if t.hasStream {
		s := start.Add(t.stream)
		if dl.IsZero() || s.Before(dl) {
			return s, true
		}
	}
	return dl, false
}

// attempt returns the deadline of one attempt started at now, given the
// overall deadline; perTry reports that the per-try timeout is the
// binding one.
func (t *requestTimeouts) attempt(now, overall time.Time) (dl time.Time, perTry bool) {
	dl = overall
	if t.perTry > 0 {
		p := now.Add(t.perTry)
		if dl.IsZero() || p.Before(dl) {
			dl, perTry = p, true
		}
	}
	return dl, perTry
}

func minTime(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}
