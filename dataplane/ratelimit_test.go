package dataplane

import (
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

// TestNetworkRateLimit: with a bucket of 2 tokens and no refill during the
// test, the first two connections are proxied and the third is closed at
// once without reaching the backend.
func TestNetworkRateLimit(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("be", startBackend(t, lineEcho("be")))
	chain := tcpChain("tcp", "be")
	chain.RateLimits = []*state.NetworkRateLimit{{StatPrefix: "conn",
		Bucket: state.TokenBucket{MaxTokens: 2, TokensPerFill: 1, FillInterval: time.Hour}}}
	e.listener(tcpListener("l", chain))
	addr := e.addr("l")

	for range 2 {
		roundTrip(t, dial(t, addr), "hi\n", "be:hi\n")
	}
	c := dial(t, addr)
	expectClosed(t, c, 2*time.Second)
	if got := e.srv.Stats()["l"].RateLimited; got != 1 {
		t.Fatalf("RateLimited = %d, want 1", got)
	}
}

// TestNetworkRateLimitRefills: after the fill interval a new connection is
// admitted again.
func TestNetworkRateLimitRefills(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("be", startBackend(t, lineEcho("be")))
	chain := tcpChain("tcp", "be")
	chain.RateLimits = []*state.NetworkRateLimit{{StatPrefix: "conn",
		Bucket: state.TokenBucket{MaxTokens: 1, TokensPerFill: 1, FillInterval: 200 * time.Millisecond}}}
	e.listener(tcpListener("l", chain))
	addr := e.addr("l")

	roundTrip(t, dial(t, addr), "a\n", "be:a\n")
	expectClosed(t, dial(t, addr), 2*time.Second)
	time.Sleep(250 * time.Millisecond)
	roundTrip(t, dial(t, addr), "b\n", "be:b\n")
}

// TestNetworkRateLimitSurvivesRedelivery: xDS re-delivers an unchanged
// listener as new objects; the bucket must not refill because of it, while
// a changed limit starts a fresh bucket.
func TestNetworkRateLimitSurvivesRedelivery(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("be", startBackend(t, lineEcho("be")))
	mk := func(max uint32) *state.Listener {
		chain := tcpChain("tcp", "be")
		chain.RateLimits = []*state.NetworkRateLimit{{StatPrefix: "conn",
			Bucket: state.TokenBucket{MaxTokens: max, TokensPerFill: 1, FillInterval: time.Hour}}}
		l := tcpListener("l", chain)
		return l
	}
	first := mk(1)
	e.listener(first)
	addr := e.addr("l")
	roundTrip(t, dial(t, addr), "a\n", "be:a\n")

	again := mk(1)
	again.Address = first.Address
	e.listener(again)
	expectClosed(t, dial(t, addr), 2*time.Second)

	bigger := mk(2)
	bigger.Address = first.Address
	e.listener(bigger)
	roundTrip(t, dial(t, addr), "b\n", "be:b\n")
}
