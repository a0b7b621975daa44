package dataplane

import (
	"time"

	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// newConnLimits builds the token buckets of a filter chain's network
// local_ratelimit filters. Each compiled chain has its own buckets, so a
// listener update starts them full again, as Envoy's rebuilt filter chains
// do.
func newConnLimits(specs []*state.NetworkRateLimit) []*policy.TokenBucket {
	if len(specs) == 0 {
		return nil
	}
	now := time.Now()
	out := make([]*policy.TokenBucket, len(specs))
	for i, s := range specs {
		out[i] = policy.NewTokenBucket(s.Bucket, now)
	}
	return out
}

// admit takes a token from each of the chain's connection rate limits in
// order and reports whether the new connection may proceed. A refused
// connection is closed without reading from it, before TLS or any other
// filter runs. Like Envoy, a filter that refuses stops the chain, so later
// buckets keep their tokens.
func (c *chainRuntime) admit() bool {
	if len(c.limits) == 0 {
		return true
	}
	now := time.Now()
	for _, b := range c.limits {
		if !b.Take(now) {
			return false
		}
	}
	return true
}

// inheritLimits keeps the token buckets of old's chains for the chains of
// c whose name and rate limit specs are unchanged. A chain whose limits
// changed starts full, as in Envoy.
func (c *listenerConfig) inheritLimits(old *listenerConfig) {
	c.pairChains(old, func(prev, cur *chainRuntime) {
		if len(cur.limits) > 0 && sameSpecs(prev.spec.RateLimits, cur.spec.RateLimits) {
			cur.limits = prev.limits
		}
	})
}

// pairChains calls fn for every chain of c that has a chain of the same
// name in old (the default chains pair with each other), so per-chain
// runtime state can survive a listener update.
func (c *listenerConfig) pairChains(old *listenerConfig, fn func(prev, cur *chainRuntime)) {
	if old == nil {
		return
	}
	prev := make(map[string]*chainRuntime, len(old.chains))
	for _, cr := range old.chains {
		prev[cr.spec.Name] = cr
	}
	for _, cr := range c.chains {
		if o := prev[cr.spec.Name]; o != nil {
			fn(o, cr)
		}
	}
	if c.def != nil && old.def != nil {
		fn(old.def, c.def)
	}
}

// sameSpecs reports whether two lists of specs are equal element by element.
func sameSpecs[T comparable](a, b []*T) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if *a[i] != *b[i] {
			return false
		}
	}
	return true
}
