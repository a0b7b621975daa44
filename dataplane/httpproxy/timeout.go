package httpproxy

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
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

// errRequestTimeout is the cancel cause when the whole request (headers
// to the end of the body) did not arrive within the connection manager's
// request_timeout.
var errRequestTimeout = errors.New("request timeout")

// h2StreamTimer is the one timer of a downstream HTTP/2 stream. It carries
// stream_idle_timeout (body bytes in either direction push it back) and
// request_timeout (the request must have ended by then; Envoy disarms it
// once it has, even while the response still streams).
//
// Body reads only record when bytes last flowed; the timer is not reset on
// each read. When it fires it works out which deadline passed, cancels
// the stream with that cause, or re-arms for the nearer remaining one.
type h2StreamTimer struct {
	t      *time.Timer
	start  time.Time // base of the offsets; monotonic
	cancel context.CancelCauseFunc
	// idle is stream_idle_timeout (0: none).
	idle time.Duration
	// reqDL is the request deadline's offset from start (0: none). Fixed
	// before the timer is armed.
	reqDL time.Duration
	// stream, on our own server, tells when the timer fires whether the
	// client has sent the whole request (nil: only reqEOF tells).
	stream *h2sStream
	// last is the offset from start of the last body bytes (ns).
	last atomic.Int64
	// reqEOF: the request body was read to its end.
	reqEOF atomic.Bool
	// stopped: the stream is finished; a late firing does nothing.
	stopped atomic.Bool
}

// arm starts the timer for idle and request timeout rt (either may be
// 0; the caller arms only when one is not). start is when the stream
// began: request_timeout counts from there.
func (s *h2StreamTimer) arm(start time.Time, idle, rt time.Duration, stream *h2sStream, cancel context.CancelCauseFunc) {
	s.start, s.idle, s.reqDL, s.stream, s.cancel = start, idle, rt, stream, cancel
	now := time.Since(start)
	s.last.Store(int64(now))
	wait := idle
	if rt > 0 && (wait == 0 || rt-now < wait) {
		wait = max(rt-now, 1)
	}
	// Created idle and then reset, so that fire never sees s.t unset.
	s.t = time.AfterFunc(time.Duration(1<<63-1), s.fire)
	s.t.Reset(wait)
}

// active records body bytes flowing at this moment.
func (s *h2StreamTimer) active() { s.last.Store(int64(time.Since(s.start))) }

// stop disarms the timer for good.
func (s *h2StreamTimer) stop() {
	if s.t != nil {
		s.stopped.Store(true)
		s.t.Stop()
	}
}

func (s *h2StreamTimer) requestEnded() bool {
	return s.reqEOF.Load() || (s.stream != nil && s.stream.requestEnded())
}

func (s *h2StreamTimer) fire() {
	if s.stopped.Load() {
		return
	}
	now := time.Since(s.start)
	var next time.Duration
	if s.reqDL > 0 && !s.requestEnded() {
		if now >= s.reqDL {
			s.cancel(errRequestTimeout)
			return
		}
		next = s.reqDL - now
	}
	if s.idle > 0 {
		quiet := now - time.Duration(s.last.Load())
		if quiet >= s.idle {
			s.cancel(errH2StreamIdle)
			return
		}
		if r := s.idle - quiet; next == 0 || r < next {
			next = r
		}
	}
	if next > 0 && !s.stopped.Load() {
		s.t.Reset(next)
	}
}

// h2TimedBody feeds a stream body's reads to its h2StreamTimer; req marks
// the request body, whose end disarms request_timeout.
type h2TimedBody struct {
	io.ReadCloser
	t   *h2StreamTimer
	req bool
}

func (b *h2TimedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 && b.t.idle > 0 {
		b.t.active()
	}
	if err == io.EOF && b.req {
		b.t.reqEOF.Store(true)
	}
	return n, err
}
