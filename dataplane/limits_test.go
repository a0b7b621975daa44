package dataplane

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlet/meshlet/dataplane/httpproxy"
	"github.com/meshlet/meshlet/state"
)

// TestConnectionLimit: with max_connections 2, a third concurrent
// connection is closed and counted; once one closes a new one is served.
func TestConnectionLimit(t *testing.T) {
	tests := []struct {
		name  string
		delay time.Duration
	}{
		{"no delay", 0},
		{"delay", 200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, Options{})
			e.cluster("be", startBackend(t, lineEcho("be")))
			chain := tcpChain("tcp", "be")
			chain.ConnectionLimits = []*state.ConnectionLimit{{StatPrefix: "cl", MaxConnections: 2, Delay: tt.delay}}
			e.listener(tcpListener("l", chain))
			addr := e.addr("l")

			c1, c2 := dial(t, addr), dial(t, addr)
			roundTrip(t, c1, "a\n", "be:a\n")
			roundTrip(t, c2, "b\n", "be:b\n")
			start := time.Now()
			expectClosed(t, dial(t, addr), 2*time.Second)
			if took := time.Since(start); took < tt.delay {
				t.Errorf("over-limit connection closed after %v, before the %v delay", took, tt.delay)
			}
			if got := e.srv.Stats()["l"].ConnectionLimited; got != 1 {
				t.Fatalf("ConnectionLimited = %d, want 1", got)
			}
			c1.Close()
			eventually(t, "slot freed", func() bool { return e.srv.Stats()["l"].Active == 1 })
			roundTrip(t, dial(t, addr), "c\n", "be:c\n")
		})
	}
}

// TestConnectionLimitSurvivesRedelivery: re-delivering the same listener
// keeps the count, so it does not let a second batch in.
func TestConnectionLimitSurvivesRedelivery(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("be", startBackend(t, lineEcho("be")))
	mk := func() *state.Listener {
		chain := tcpChain("tcp", "be")
		chain.ConnectionLimits = []*state.ConnectionLimit{{StatPrefix: "cl", MaxConnections: 1}}
		return tcpListener("l", chain)
	}
	first := mk()
	e.listener(first)
	addr := e.addr("l")
	roundTrip(t, dial(t, addr), "a\n", "be:a\n")
	again := mk()
	again.Address = first.Address
	e.listener(again)
	expectClosed(t, dial(t, addr), 2*time.Second)
}

// TestGlobalMaxConnections: Options.MaxConnections counts connections over
// all listeners.
func TestGlobalMaxConnections(t *testing.T) {
	e := newEnv(t, Options{MaxConnections: 2})
	e.cluster("be", startBackend(t, lineEcho("be")))
	e.listener(tcpListener("a", tcpChain("tcp", "be")))
	e.listener(tcpListener("b", tcpChain("tcp", "be")))
	roundTrip(t, dial(t, e.addr("a")), "1\n", "be:1\n")
	roundTrip(t, dial(t, e.addr("b")), "2\n", "be:2\n")
	expectClosed(t, dial(t, e.addr("a")), 2*time.Second)
	expectClosed(t, dial(t, e.addr("b")), 2*time.Second)
	st := e.srv.Stats()
	if st["a"].GlobalLimited != 1 || st["b"].GlobalLimited != 1 {
		t.Fatalf("GlobalLimited a=%d b=%d, want 1 each", st["a"].GlobalLimited, st["b"].GlobalLimited)
	}
	if n := e.srv.ActiveConnections(); n != 2 {
		t.Fatalf("ActiveConnections = %d, want 2", n)
	}
}

// TestHeapMonitor: the overload follows the sampled heap against Max and
// is off once the monitor stops.
func TestHeapMonitor(t *testing.T) {
	var heap atomicU64
	o := new(httpproxy.Overload)
	m := &HeapMonitor{Max: 1000, Interval: 5 * time.Millisecond, Overload: o, read: heap.Load}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx) }()
	for _, tt := range []struct {
		heap uint64
		want bool
	}{{10, false}, {1000, true}, {5000, true}, {999, false}} {
		heap.Store(tt.heap)
		eventually(t, "overload follows heap", func() bool { return o.Active() == tt.want })
	}
	heap.Store(5000)
	eventually(t, "overload on", o.Active)
	cancel()
	<-done
	if o.Active() {
		t.Fatal("overload still active after the monitor stopped")
	}
}

// TestReadHeapIsLive: the real reader reports a plausible heap size.
func TestReadHeapIsLive(t *testing.T) {
	if n := readHeap()(); n < 1<<10 {
		t.Fatalf("heap = %d bytes", n)
	}
}

type atomicU64 struct{ v atomic.Uint64 }

func (a *atomicU64) Load() uint64   { return a.v.Load() }
func (a *atomicU64) Store(n uint64) { a.v.Store(n) }
