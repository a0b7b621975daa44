package httpproxy

import (
	"math/rand/v2"
	"time"

	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// HeaderRateLimited is set on local rate limit replies (Envoy's router
// header x-envoy-ratelimited).
const HeaderRateLimited = "x-envoy-ratelimited"

// grpcResourceExhausted is the gRPC status for rate_limited_as_resource_exhausted.
const grpcResourceExhausted = 8

// rateLimitState is the runtime of one local rate limit config: its bucket
// and the header mutations its replies carry, built once.
type rateLimitState struct {
	bucket *policy.TokenBucket
	// limited adds response_headers_to_add and x-envoy-ratelimited to the
	// 429; notEnforced adds request_headers_to_add_when_not_enforced.
	limited     state.HeaderMutation
	notEnforced state.HeaderMutation
}

var rateLimitStates sideTable[state.LocalRateLimit, rateLimitState]

func newRateLimitState(l *state.LocalRateLimit) *rateLimitState {
	st := &rateLimitState{}
	if l.Bucket != nil {
		st.bucket = policy.NewTokenBucket(*l.Bucket, time.Now())
	}
	st.limited.ResponseAdd = append(append([]state.HeaderValueOption(nil), l.ResponseHeadersToAdd...),
		state.HeaderValueOption{Key: HeaderRateLimited, Value: "true", Action: state.OverwriteIfExistsOrAdd})
	st.notEnforced.RequestAdd = l.RequestHeadersToAddWhenNotEnforced
	return st
}

// rateLimit applies one local rate limit config to d and reports whether d
// became a local reply. The order is Envoy's: filter_enabled samples first,
// then the bucket, then filter_enforced decides between the reply and only
// the not-enforced request headers.
func (p *Proxy) rateLimit(l *state.LocalRateLimit, d *decision) bool {
	if l.Bucket == nil || !policy.FractionHit(l.Enabled, rand.Uint64()) {
		return false
	}
	st := rateLimitStates.get(l, newRateLimitState)
	if st.bucket.Take(time.Now()) {
		return false
	}
	if !policy.FractionHit(l.Enforced, rand.Uint64()) {
		if !st.notEnforced.Empty() {
			d.filterMut = &st.notEnforced
		}
		return false
	}
	d.setLocal(l.Status, FlagRateLimited, BodyLocalRateLimited)
	d.location = ""
	d.filterMut = &st.limited
	if l.RateLimitedAsResourceExhausted {
		d.grpcStatus, d.hasGRPCStatus = grpcResourceExhausted, true
	}
	return true
}
