package policy

import (
	"sync"
	"time"

	"github.com/meshlet/meshlet/state"
)

// TokenBucket is Envoy's local rate limit bucket: it starts full with
// MaxTokens and gains TokensPerFill every FillInterval, up to MaxTokens.
// Fills happen on interval boundaries counted from creation, so a burst
// right after a fill cannot borrow from the next one. Safe for concurrent
// use; the caller passes the time so tests need no clock.
type TokenBucket struct {
	spec state.TokenBucket

	mu     sync.Mutex
	tokens uint64
	last   time.Time // the most recent fill boundary
}

// NewTokenBucket returns a full bucket for spec.
func NewTokenBucket(spec state.TokenBucket, now time.Time) *TokenBucket {
	if spec.TokensPerFill == 0 {
		spec.TokensPerFill = 1
	}
	return &TokenBucket{spec: spec, tokens: uint64(spec.MaxTokens), last: now}
}

// Take consumes a token at now and reports whether there was one.
func (b *TokenBucket) Take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if iv := b.spec.FillInterval; iv > 0 {
		if elapsed := now.Sub(b.last); elapsed >= iv {
			n := uint64(elapsed / iv)
			// n is capped so n*TokensPerFill cannot overflow after a long
			// quiet period; MaxTokens fills always refill completely.
			add := min(n, uint64(b.spec.MaxTokens)) * uint64(b.spec.TokensPerFill)
			b.tokens = min(uint64(b.spec.MaxTokens), b.tokens+add)
			b.last = b.last.Add(time.Duration(n) * iv)
		}
	}
	if b.tokens == 0 {
		return false
	}
	b.tokens--
	return true
}
