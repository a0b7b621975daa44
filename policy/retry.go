package policy

import (
	"strings"
	"time"

	"github.com/meshlet/meshlet/state"
)

// Failure says how an upstream attempt ended when it produced no response
// head.
type Failure int

const (
	// FailureNone: the attempt produced a response head.
	FailureNone Failure = iota
	// FailureConnect: no connection could be opened (pool failure).
	FailureConnect
	// FailureRefusedStream: an HTTP/2 peer refused the stream
	// (REFUSED_STREAM), so nothing was processed.
	FailureRefusedStream
	// FailureReset: the stream or connection was reset or closed before a
	// response head, including a per-try timeout (Envoy resets the stream).
	FailureReset
	// FailureOverflow: a circuit breaker refused the attempt; never retried.
	FailureOverflow
)

// Attempt is the outcome of one upstream attempt as the retry decision
// sees it.
type Attempt struct {
	Failure Failure
	// Status is the response's HTTP status (FailureNone only).
	Status int
	// GRPCStatus is the grpc-status of a trailers-only response, -1 when
	// the response head carries none.
	GRPCStatus int
	// Headers are the response headers for retriable-headers matching
	// (may be nil when the policy does not use them).
	Headers Request
	// Sent reports whether request bytes reached the upstream
	// (reset-before-request retries only when false).
	Sent bool
}

// ShouldRetry reports whether p wants another attempt after a, ignoring
// the retry budget (the caller counts retries and circuit breakers). It
// follows Envoy's RetryStateImpl::wouldRetryFromHeaders/FromReset.
func ShouldRetry(p *state.RetryPolicy, a *Attempt) bool {
	if p == nil {
		return false
	}
	on := p.RetryOn
	switch a.Failure {
	case FailureOverflow:
		return false
	case FailureConnect:
		// A pool failure: connect-failure, and like every reset, 5xx,
		// gateway-error and reset.
		if on&state.RetryConnectFailure != 0 {
			return true
		}
		return resetRetry(on, a)
	case FailureRefusedStream, FailureReset:
		if resetRetry(on, a) {
			return true
		}
		return a.Failure == FailureRefusedStream && on&state.RetryRefusedStream != 0
	}
	if a.Headers != nil {
		if _, ok := a.Headers.Header("x-envoy-ratelimited"); ok {
			return on&state.RetryEnvoyRateLimited != 0
		}
	}
	s := a.Status
	switch {
	case on&state.Retry5xx != 0 && s >= 500 && s <= 599:
		return true
	case on&state.RetryGatewayError != 0 && (s == 502 || s == 503 || s == 504):
		return true
	case on&state.RetryRetriable4xx != 0 && s == 409:
		return true
	}
	if on&state.RetryRetriableStatusCodes != 0 {
		for _, c := range p.RetriableStatusCodes {
			if int(c) == s {
				return true
			}
		}
	}
	if on&state.RetryRetriableHeaders != 0 && a.Headers != nil {
		for i := range p.RetriableHeaders {
			if MatchHeader(&p.RetriableHeaders[i], a.Headers) {
				return true
			}
		}
	}
	if on&state.RetryGRPCAny != 0 && a.GRPCStatus >= 0 {
		var want state.RetryOn
		switch a.GRPCStatus {
		case 1:
			want = state.RetryGRPCCancelled
		case 4:
			want = state.RetryGRPCDeadlineExceeded
		case 8:
			want = state.RetryGRPCResourceExhausted
		case 13:
			want = state.RetryGRPCInternal
		case 14:
			want = state.RetryGRPCUnavailable
		}
		return on&want != 0
	}
	return false
}

func resetRetry(on state.RetryOn, a *Attempt) bool {
	if on&state.RetryResetBeforeRequest != 0 && !a.Sent {
		return true
	}
	return on&(state.RetryReset|state.Retry5xx|state.RetryGatewayError) != 0
}

// WantsResponseHeaders reports whether p may retry on a response head, so
// the proxy must look at (and possibly discard) a response before relaying
// it.
func WantsResponseHeaders(p *state.RetryPolicy) bool {
	return p != nil && p.RetryOn&^(state.RetryReset|state.RetryResetBeforeRequest|
		state.RetryConnectFailure|state.RetryRefusedStream) != 0
}

// BackOff returns the delay before retry number n (1 for the first retry):
// Envoy's fully jittered exponential back-off, a random value in
// [0, (2^n - 1) * base) capped at max. rnd is a uniform random number.
func BackOff(base, max time.Duration, n int, rnd uint64) time.Duration {
	if base <= 0 {
		return 0
	}
	if max <= 0 {
		max = 10 * base
	}
	if n < 1 {
		n = 1
	}
	// Past 2^n-1 > max/base the window stops growing; clamp n so the
	// multiplication cannot overflow.
	var window time.Duration
	if n >= 62 || (time.Duration(1)<<n-1) > max/base {
		window = max + base // any value over max: the cap applies below
	} else {
		window = (time.Duration(1)<<n - 1) * base
	}
	d := time.Duration(rnd % uint64(window))
	if d > max {
		d = max
	}
	return d
}

// RouteTimeout returns the upstream (router) timeout of a request on
// route action a, 0 meaning none, following Envoy's
// FilterUtility::finalTimeout: when the route has a max_stream_duration
// message ("new timeouts") the router timeout is off and StreamDuration
// governs; otherwise a gRPC request on a route with the deprecated
// max_grpc_timeout uses its grpc-timeout header (less
// grpc_timeout_offset, when that leaves it positive) capped at the
// maximum, 0 meaning no cap; other requests use the route timeout.
func RouteTimeout(a *state.RouteAction, grpc bool, grpcTimeout time.Duration, hasGRPCTimeout bool) time.Duration {
	if a.MaxStreamDurationSet {
		return 0
	}
	if grpc && a.GrpcTimeoutHeaderMax != nil {
		max := *a.GrpcTimeoutHeaderMax
		t := time.Duration(0)
		if hasGRPCTimeout {
			t = grpcTimeout
		}
		if off := a.GrpcTimeoutHeaderOffset; off > 0 && off < t {
			t -= off
		}
		if max != 0 && (t == 0 || t > max) {
			t = max
		}
		return t
	}
	return a.Timeout
}

// StreamDuration returns the stream's maximum duration on route action a
// (Envoy's ConnectionManagerImpl::refreshDurationTimeout, gRFC A31): with
// a grpc-timeout header and grpc_timeout_header_max configured it is the
// header value capped at the maximum (0 = no cap) less the offset (a
// header not above the offset gives 0, which expires at once); otherwise
// max_stream_duration (0 = none). ok is false when no limit applies.
func StreamDuration(a *state.RouteAction, grpcTimeout time.Duration, hasGRPCTimeout bool) (d time.Duration, ok bool) {
	if !a.MaxStreamDurationSet {
		return 0, false
	}
	if !hasGRPCTimeout || a.GrpcTimeoutHeaderMax == nil {
		if a.MaxStreamDuration == 0 {
			return 0, false
		}
		return a.MaxStreamDuration, true
	}
	t := grpcTimeout
	if max := *a.GrpcTimeoutHeaderMax; max != 0 && t > max {
		t = max
	}
	if off := a.GrpcTimeoutHeaderOffset; t != 0 && off > 0 {
		if off < t {
			t -= off
		} else {
			t = 0
		}
	}
	return t, true
}

// PerTryTimeout returns p's per-try timeout given the request's overall
// timeout: like Envoy, a per-try timeout not below a non-zero overall
// timeout is dropped.
func PerTryTimeout(p *state.RetryPolicy, overall time.Duration) time.Duration {
	if p == nil || p.PerTryTimeout == 0 {
		return 0
	}
	if overall != 0 && p.PerTryTimeout >= overall {
		return 0
	}
	return p.PerTryTimeout
}

// EffectiveRetryPolicy returns the route's retry policy, else the virtual
// host's (Envoy does not merge the two).
func EffectiveRetryPolicy(vh *state.VirtualHost, a *state.RouteAction) *state.RetryPolicy {
	if a != nil && a.RetryPolicy != nil {
		return a.RetryPolicy
	}
	if vh != nil {
		return vh.RetryPolicy
	}
	return nil
}

// MirrorSampled reports whether a request with random value rnd is
// mirrored by m (runtime_fraction default_value).
func MirrorSampled(m *state.MirrorPolicy, rnd uint64) bool {
	if m.Denominator == 0 || m.Numerator >= m.Denominator {
		return true
	}
	return rnd%uint64(m.Denominator) < uint64(m.Numerator)
}

// ShadowAuthority returns the authority of a mirrored request: "-shadow"
// appended to the host, before any port ("a.b:80" -> "a.b-shadow:80"), as
// Envoy does so upstream logs can tell shadows apart.
func ShadowAuthority(host string) string {
	h, port := host, ""
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		if strings.Count(host, ":") == 1 || strings.HasPrefix(host, "[") {
			h, port = host[:i], host[i:]
		}
	}
	return h + "-shadow" + port
}
