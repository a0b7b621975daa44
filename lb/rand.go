package lb

import "math/rand/v2"

// The top-level math/rand/v2 functions use the runtime's per-thread
// generator: lock-free, allocation-free and safe for concurrent Picks.

func randUint64() uint64 { return rand.Uint64() }

func randN(n int) int { return rand.IntN(n) }

func randUint64N(n uint64) uint64 { return rand.Uint64N(n) }

func randFloat64() float64 { return rand.Float64() }
