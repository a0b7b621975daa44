package xds

import (
	"math/rand/v2"
	"time"
)

// delay returns the wait before connection attempt n (0-based) after a
// failure: exponential from Base, capped at Max, then jittered down by up to
// half so that many proxies restarted together do not reconnect in lockstep.
func (b Backoff) delay(n int, rnd func(int64) int64) time.Duration {
	base, max := b.Base, b.Max
	if base <= 0 {
		base = defaultBackoffBase
	}
	if max <= 0 {
		max = defaultBackoffMax
	}
	if max < base {
		max = base
	}
	d := base
	for i := 0; i < n && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	half := int64(d / 2)
	return time.Duration(half + rnd(half+1))
}

func randInt63n(n int64) int64 { return rand.Int64N(n) }
