package httpproxy

import (
	"context"
	"net/http"
	"strings"
	"time"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// The forwarding paths that build an *http.Request for the upstream (the
// HTTP/2 downstream path, and HTTP/1.1 downstream to an HTTP/2 upstream)
// share this file: one attempt (circuit breaker, per-try timers, outlier
// reporting) and the retry loop around it. The HTTP/1.1-to-HTTP/1.1 path
// keeps its own zero-allocation loop (h1forward.go) over the same
// retryState, timeouts and policy functions.

// rtAttempt is the outcome of one upstream attempt.
type rtAttempt struct {
	host     *lb.Host
	cb       func()
	failure  policy.Failure
	err      error
	perTry   bool
	overflow bool
	// maxDur: the cluster's max_stream_duration ended the attempt.
	maxDur bool
}

// done ends a successful attempt: the host's active count and the
// circuit-breaker unit. Safe to call twice.
func (a *rtAttempt) done() {
	if a.host != nil {
		a.host.Release()
		a.cb()
		a.host = nil
	}
}

// attemptRT sends req to d's current host, with the per-try timeout armed
// until the response head arrives and the cluster's max_stream_duration
// until the body ends.
func (p *Proxy) attemptRT(ctx context.Context, d *decision, rs *retryState, to *requestTimeouts, req *http.Request, overall time.Time) (*http.Response, rtAttempt) {
	var res rtAttempt
	release, ok := d.cluster.Acquire(upstream.ResourceRequests)
	if !ok {
		res.overflow = true
		return nil, res
	}
	host := d.host
	host.Acquire()
	rs.started(host)
	if d.vh != nil && d.vh.IncludeAttemptCount {
		req.Header["X-Envoy-Attempt-Count"] = []string{attemptCount(rs.attempts)}
	}
	dl, sdl, perTry, _ := to.attemptBounds(d.cluster, time.Now(), overall)
	actx, stopStream := withStreamDuration(ctx, sdl)
	var cancel context.CancelCauseFunc
	var timer *time.Timer
	if perTry || to.perTryIdle > 0 {
		actx, cancel = context.WithCancelCause(actx)
		wait := time.Until(dl)
		if !perTry || (to.perTryIdle > 0 && to.perTryIdle < wait) {
			wait = to.perTryIdle
		}
		timer = time.AfterFunc(wait, func() { cancel(errPerTryTimeout) })
	}
	var resp *http.Response
	var err error
	if d.proto == state.UpstreamHTTP2 {
		// x/net's client cancels the stream through the request's context.
		resp, err = p.roundTripH2(actx, d.ep, req.WithContext(actx))
	} else {
		// roundTripH1 watches actx itself: no context-bound copy of req.
		req.URL.Scheme = ""
		resp, err = p.roundTripH1(actx, d.ep, req)
	}
	if timer != nil && err == nil && !timer.Stop() {
		// The per-try timer fired as the head arrived: treat as timeout.
		resp.Body.Close()
		resp, err = nil, context.Cause(actx)
	}
	if err != nil {
		if cancel != nil {
			cancel(nil)
		}
		stopStream()
		host.Release()
		release()
		switch {
		case !sdl.IsZero() && context.Cause(actx) == errUpstreamStreamDuration:
			res.maxDur = true
			res.failure = policy.FailureReset
		case cancel != nil && context.Cause(actx) == errPerTryTimeout:
			res.perTry = true
			d.cluster.ReportLocal(host, upstream.RequestTimeout)
		case isDialError(err):
			res.failure = policy.FailureConnect
			d.cluster.ReportLocal(host, upstream.ConnectFailure)
		case isRefusedStream(err):
			res.failure = policy.FailureRefusedStream
			d.cluster.ReportLocal(host, upstream.UpstreamReset)
		case ctx.Err() != nil:
			res.failure = policy.FailureReset
			// Only the router's own deadline is the host's fault; the
			// downstream side's timers (request_timeout, stream idle,
			// max_stream_duration) and a client that left say nothing
			// about the host, as in Envoy, where the connection manager
			// resets those streams and outlier detection never hears.
			if c := context.Cause(ctx); c == errRouteTimeout || c == context.DeadlineExceeded {
				d.cluster.ReportLocal(host, upstream.RequestTimeout)
			}
		default:
			res.failure = policy.FailureReset
			d.cluster.ReportLocal(host, upstream.UpstreamReset)
		}
		res.err = err
		return nil, res
	}
	d.cluster.ReportHTTP(host, outlierStatus(resp))
	res.host, res.cb = host, release
	if cancel != nil || !sdl.IsZero() {
		// The attempt context must outlive the body; cancel with the rest.
		inner := resp.Body
		resp.Body = &cancelBody{ReadCloser: inner, cancel: func() {
			if cancel != nil {
				cancel(nil)
			}
			stopStream()
		}}
	}
	return resp, res
}

// rtOutcome says how an exchange ended.
type rtOutcome uint8

const (
	// rtResponse: a response head arrived and is the answer; the caller
	// must call the attempt's done once the body is finished.
	rtResponse rtOutcome = iota
	// rtOverflow: the requests circuit breaker refused the attempt (UO).
	rtOverflow
	// rtNoHealthy: a retry found no host to go to.
	rtNoHealthy
	// rtDownstreamGone: the client left; nobody is left to answer (DC).
	rtDownstreamGone
	// rtFailed: no response; the attempt and context.Cause(ctx) say why.
	rtFailed
)

// rtExchange is one request forwarded under the route's retry policy.
type rtExchange struct {
	d  *decision
	rs *retryState
	rp *state.RetryPolicy
	to *requestTimeouts
	// out is the upstream request; retries send clones of it.
	out *http.Request
	// rb replays the body for retries and mirrors (nil: no body, or no
	// retry policy and no mirrors).
	rb      *replayBody
	hasBody bool
	overall time.Time
	// down is done once the downstream client went away.
	down context.Context
	// downstreamH2 resolves USE_DOWNSTREAM_PROTOCOL for mirrors.
	downstreamH2 bool
}

// exchangeRT runs attempts until one gives the answer. ctx carries the
// overall timers as cancel causes (errRouteTimeout, errStreamDuration,
// errH2StreamIdle); x.d's host changes with each retry. On rtResponse
// the response flags already include URX/UO.
func (p *Proxy) exchangeRT(ctx context.Context, x *rtExchange) (*http.Response, rtAttempt, rtOutcome) {
	d, rs, rb := x.d, x.rs, x.rb
	mirrors := d.action != nil && len(d.action.MirrorPolicies) > 0
	replayable := func() bool { return rb == nil || rb.replayable() }
	for {
		req := x.out
		if rs.attempts > 0 {
			req = x.out.Clone(ctx)
		}
		if rb != nil {
			req.Body = rb.reader()
		}
		resp, res := p.attemptRT(ctx, d, rs, x.to, req, x.overall)
		if mirrors && rs.attempts == 1 && !res.overflow {
			// After the first attempt a unary body has been read whole, so
			// the mirror gets it; the primary response is not held back.
			p.mirrorRT(d.action.MirrorPolicies, x.out, rb, x.hasBody, x.to.global, x.downstreamH2)
		}
		if res.overflow {
			return nil, res, rtOverflow
		}
		if resp != nil {
			a := policy.Attempt{Status: resp.StatusCode, GRPCStatus: -1, Sent: true}
			if x.rp != nil && policy.WantsResponseHeaders(x.rp) && replayable() {
				v := resp.Header["Grpc-Status"]
				a.GRPCStatus = grpcStatusOf(strings.Join(v, ""), len(v) == 1)
				a.Headers = &httpHeaderRequest{h: resp.Header}
				if rs.next(ctx, &a, x.overall) {
					resp.Body.Close()
					res.done()
					if !rs.repick(d) {
						return nil, res, rtNoHealthy
					}
					continue
				}
			}
			d.flags = rs.finalFlags(d.flags)
			return resp, res, rtResponse
		}
		if x.down.Err() != nil {
			return nil, res, rtDownstreamGone
		}
		cause := context.Cause(ctx)
		if cause == nil && !res.perTry && replayable() {
			a := policy.Attempt{Failure: res.failure, GRPCStatus: -1, Sent: true}
			if rs.next(ctx, &a, x.overall) {
				if !rs.repick(d) {
					return nil, res, rtNoHealthy
				}
				continue
			}
		} else if res.perTry && replayable() {
			a := policy.Attempt{Failure: policy.FailureReset, GRPCStatus: -1, Sent: true}
			if rs.next(ctx, &a, x.overall) && rs.repick(d) {
				continue
			}
		}
		if x.down.Err() != nil {
			return nil, res, rtDownstreamGone
		}
		return nil, res, rtFailed
	}
}

// rtFailure is the local reply to a failed exchange (rtFailed) that is
// not a stream-duration timeout: status, flags with URX/UO, body.
func rtFailure(ctx context.Context, res *rtAttempt, rs *retryState) (status int, flags, body string) {
	status, flags, body = h2UpstreamFailure(ctx, res.err)
	if res.maxDur {
		// The request body state is not tracked here: answered as complete.
		status, flags, body = upstreamStreamDurationReply(true)
	}
	if res.perTry {
		status, flags, body = http.StatusGatewayTimeout, FlagUpstreamTimeout, BodyUpstreamTimeout
	}
	return status, rs.finalFlags(flags), body
}

// armOverall cancels ctx (through cancel) with errRouteTimeout or
// errStreamDuration at the request's overall deadline. stop disarms it.
func armOverall(to *requestTimeouts, start time.Time, cancel context.CancelCauseFunc) (overall time.Time, stop func() bool) {
	overall, streamDL := to.overall(start)
	if overall.IsZero() {
		return overall, func() bool { return true }
	}
	cause := errRouteTimeout
	if streamDL {
		cause = errStreamDuration
	}
	t := time.AfterFunc(time.Until(overall), func() { cancel(cause) })
	return overall, t.Stop
}
