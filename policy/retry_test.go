package policy

import (
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

type hdrs map[string]string

func (h hdrs) Authority() string { return "" }
func (h hdrs) Path() string      { return "" }
func (h hdrs) Method() string    { return "" }
func (h hdrs) Header(n string) (string, bool) {
	v, ok := h[n]
	return v, ok
}

func TestShouldRetry(t *testing.T) {
	p := func(on state.RetryOn) *state.RetryPolicy {
		return &state.RetryPolicy{RetryOn: on, NumRetries: 1, RetriableStatusCodes: []uint32{418},
			RetriableHeaders: []state.HeaderMatcher{{Name: "x-retry", Kind: state.HeaderPresent, Present: true}}}
	}
	resp := func(status, grpc int) *Attempt { return &Attempt{Status: status, GRPCStatus: grpc, Sent: true} }
	tests := []struct {
		name string
		on   state.RetryOn
		a    *Attempt
		want bool
	}{
		{"5xx retries 500", state.Retry5xx, resp(500, -1), true},
		{"5xx retries 503", state.Retry5xx, resp(503, -1), true},
		{"5xx not 404", state.Retry5xx, resp(404, -1), false},
		{"5xx covers reset", state.Retry5xx, &Attempt{Failure: FailureReset}, true},
		{"5xx covers connect failure", state.Retry5xx, &Attempt{Failure: FailureConnect}, true},
		{"gateway-error 502", state.RetryGatewayError, resp(502, -1), true},
		{"gateway-error not 500", state.RetryGatewayError, resp(500, -1), false},
		{"gateway-error covers reset", state.RetryGatewayError, &Attempt{Failure: FailureReset}, true},
		{"reset", state.RetryReset, &Attempt{Failure: FailureReset}, true},
		{"reset not on 503 response", state.RetryReset, resp(503, -1), false},
		{"connect-failure", state.RetryConnectFailure, &Attempt{Failure: FailureConnect}, true},
		{"connect-failure not reset", state.RetryConnectFailure, &Attempt{Failure: FailureReset}, false},
		{"refused-stream", state.RetryRefusedStream, &Attempt{Failure: FailureRefusedStream}, true},
		{"refused-stream not plain reset", state.RetryRefusedStream, &Attempt{Failure: FailureReset}, false},
		{"reset-before-request unsent", state.RetryResetBeforeRequest, &Attempt{Failure: FailureReset}, true},
		{"reset-before-request sent", state.RetryResetBeforeRequest, &Attempt{Failure: FailureReset, Sent: true}, false},
		{"retriable-4xx 409", state.RetryRetriable4xx, resp(409, -1), true},
		{"retriable-4xx not 408", state.RetryRetriable4xx, resp(408, -1), false},
		{"retriable-status-codes", state.RetryRetriableStatusCodes, resp(418, -1), true},
		{"retriable-status-codes other", state.RetryRetriableStatusCodes, resp(419, -1), false},
		{"codes listed but condition off", state.Retry5xx, resp(418, -1), false},
		{"retriable-headers", state.RetryRetriableHeaders, &Attempt{Status: 200, GRPCStatus: -1, Headers: hdrs{"x-retry": "1"}}, true},
		{"retriable-headers absent", state.RetryRetriableHeaders, &Attempt{Status: 200, GRPCStatus: -1, Headers: hdrs{}}, false},
		{"grpc unavailable", state.RetryGRPCUnavailable, resp(200, 14), true},
		{"grpc unavailable not internal", state.RetryGRPCUnavailable, resp(200, 13), false},
		{"grpc cancelled", state.RetryGRPCCancelled, resp(200, 1), true},
		{"grpc deadline-exceeded", state.RetryGRPCDeadlineExceeded, resp(200, 4), true},
		{"grpc resource-exhausted", state.RetryGRPCResourceExhausted, resp(200, 8), true},
		{"grpc internal", state.RetryGRPCInternal, resp(200, 13), true},
		{"grpc ok", state.RetryGRPCAny, resp(200, 0), false},
		{"grpc no status", state.RetryGRPCAny, resp(200, -1), false},
		{"overflow never", state.Retry5xx | state.RetryReset, &Attempt{Failure: FailureOverflow}, false},
		{"ratelimited only with envoy-ratelimited", state.Retry5xx, &Attempt{Status: 503, GRPCStatus: -1, Headers: hdrs{"x-envoy-ratelimited": "true"}}, false},
		{"envoy-ratelimited", state.RetryEnvoyRateLimited, &Attempt{Status: 429, GRPCStatus: -1, Headers: hdrs{"x-envoy-ratelimited": "true"}}, true},
		{"nothing configured", 0, resp(503, 14), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ShouldRetry(p(tt.on), tt.a); got != tt.want {
				t.Errorf("ShouldRetry(%b, %+v) = %v, want %v", tt.on, tt.a, got, tt.want)
			}
		})
	}
	if ShouldRetry(nil, resp(503, -1)) {
		t.Error("nil policy retried")
	}
}

func TestBackOffBounds(t *testing.T) {
	base, max := 25*time.Millisecond, 250*time.Millisecond
	tests := []struct {
		n     int
		upper time.Duration // exclusive bound of the jitter window, capped at max
	}{
		{1, 25 * time.Millisecond},
		{2, 75 * time.Millisecond},
		{3, 175 * time.Millisecond},
		{4, max},
		{40, max},
		{100, max},
	}
	for _, tt := range tests {
		var hi time.Duration
		for r := uint64(0); r < 5000; r++ {
			d := BackOff(base, max, tt.n, r*7919+r*r*104729)
			if d < 0 || d > tt.upper || (tt.upper < max && d >= tt.upper) {
				t.Fatalf("BackOff(n=%d) = %v, want in [0, %v)", tt.n, d, tt.upper)
			}
			hi = maxDur(hi, d)
		}
		// Fully jittered: the draws spread over the window.
		if hi < tt.upper/2 {
			t.Errorf("BackOff(n=%d) never above %v; window %v", tt.n, hi, tt.upper)
		}
	}
	if d := BackOff(base, 0, 10, 1<<62); d > 10*base {
		t.Errorf("default max: got %v, want <= %v", d, 10*base)
	}
}

func maxDur(a, b time.Duration) time.Duration {
	if a > b {
		return a
	}
	return b
}

func dur(d time.Duration) *time.Duration { return &d }

func TestGRPCTimeouts(t *testing.T) {
	s := time.Second
	tests := []struct {
		name       string
		a          state.RouteAction
		grpc       bool
		header     time.Duration
		hasHeader  bool
		wantRoute  time.Duration
		wantStream time.Duration
		wantOK     bool
	}{
		{"plain route timeout", state.RouteAction{Timeout: 15 * s}, false, 0, false, 15 * s, 0, false},
		{"max_stream_duration disables route timeout", state.RouteAction{Timeout: 15 * s, MaxStreamDurationSet: true, MaxStreamDuration: 2 * s}, true, 0, false, 0, 2 * s, true},
		{"msd zero means none", state.RouteAction{MaxStreamDurationSet: true}, true, 0, false, 0, 0, false},
		{"header capped by max", state.RouteAction{MaxStreamDurationSet: true, MaxStreamDuration: 9 * s, GrpcTimeoutHeaderMax: dur(3 * s)}, true, 5 * s, true, 0, 3 * s, true},
		{"header under max", state.RouteAction{MaxStreamDurationSet: true, GrpcTimeoutHeaderMax: dur(3 * s)}, true, 2 * s, true, 0, 2 * s, true},
		{"max zero uses header as is", state.RouteAction{MaxStreamDurationSet: true, MaxStreamDuration: s, GrpcTimeoutHeaderMax: dur(0)}, true, 5 * s, true, 0, 5 * s, true},
		{"offset subtracted", state.RouteAction{MaxStreamDurationSet: true, GrpcTimeoutHeaderMax: dur(0), GrpcTimeoutHeaderOffset: 500 * time.Millisecond}, true, 2 * s, true, 0, 1500 * time.Millisecond, true},
		{"offset not below header gives zero", state.RouteAction{MaxStreamDurationSet: true, GrpcTimeoutHeaderMax: dur(0), GrpcTimeoutHeaderOffset: 3 * s}, true, 2 * s, true, 0, 0, true},
		{"no header falls back to msd", state.RouteAction{MaxStreamDurationSet: true, MaxStreamDuration: 4 * s, GrpcTimeoutHeaderMax: dur(3 * s)}, true, 0, false, 0, 4 * s, true},
		{"deprecated max_grpc_timeout caps header", state.RouteAction{Timeout: 15 * s, GrpcTimeoutHeaderMax: dur(3 * s)}, true, 5 * s, true, 3 * s, 0, false},
		{"deprecated: no header means max", state.RouteAction{Timeout: 15 * s, GrpcTimeoutHeaderMax: dur(3 * s)}, true, 0, false, 3 * s, 0, false},
		{"deprecated: offset then cap", state.RouteAction{GrpcTimeoutHeaderMax: dur(0), GrpcTimeoutHeaderOffset: s}, true, 5 * s, true, 4 * s, 0, false},
		{"deprecated: non-gRPC uses route timeout", state.RouteAction{Timeout: 15 * s, GrpcTimeoutHeaderMax: dur(3 * s)}, false, 0, false, 15 * s, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := RouteTimeout(&tt.a, tt.grpc, tt.header, tt.hasHeader); got != tt.wantRoute {
				t.Errorf("RouteTimeout = %v, want %v", got, tt.wantRoute)
			}
			got, ok := StreamDuration(&tt.a, tt.header, tt.hasHeader)
			if got != tt.wantStream || ok != tt.wantOK {
				t.Errorf("StreamDuration = %v, %v; want %v, %v", got, ok, tt.wantStream, tt.wantOK)
			}
		})
	}
}

func TestPerTryTimeout(t *testing.T) {
	p := &state.RetryPolicy{PerTryTimeout: time.Second}
	if got := PerTryTimeout(p, 0); got != time.Second {
		t.Errorf("no global: %v", got)
	}
	if got := PerTryTimeout(p, 5*time.Second); got != time.Second {
		t.Errorf("below global: %v", got)
	}
	if got := PerTryTimeout(p, time.Second); got != 0 {
		t.Errorf("not below global must be dropped: %v", got)
	}
}

func TestMirrorSampledAndShadow(t *testing.T) {
	m := &state.MirrorPolicy{Numerator: 30, Denominator: 100}
	n := 0
	for r := uint64(0); r < 10000; r++ {
		if MirrorSampled(m, r) {
			n++
		}
	}
	if n != 3000 {
		t.Errorf("30/100 sampled %d of 10000", n)
	}
	if !MirrorSampled(&state.MirrorPolicy{Numerator: 1, Denominator: 1}, 12345) {
		t.Error("100% not sampled")
	}
	if MirrorSampled(&state.MirrorPolicy{Numerator: 0, Denominator: 100}, 0) {
		t.Error("0% sampled")
	}
	for in, want := range map[string]string{
		"svc":           "svc-shadow",
		"svc.ns:8080":   "svc.ns-shadow:8080",
		"[::1]:80":      "[::1]-shadow:80",
		"10.0.0.1:9000": "10.0.0.1-shadow:9000",
	} {
		if got := ShadowAuthority(in); got != want {
			t.Errorf("ShadowAuthority(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEffectiveRetryPolicy(t *testing.T) {
	vp, rp := &state.RetryPolicy{NumRetries: 1}, &state.RetryPolicy{NumRetries: 5}
	vh := &state.VirtualHost{RetryPolicy: vp}
	if EffectiveRetryPolicy(vh, &state.RouteAction{RetryPolicy: rp}) != rp {
		t.Error("route policy must win")
	}
	if EffectiveRetryPolicy(vh, &state.RouteAction{}) != vp {
		t.Error("virtual host policy must apply")
	}
	if EffectiveRetryPolicy(&state.VirtualHost{}, &state.RouteAction{}) != nil {
		t.Error("no policy expected")
	}
}
