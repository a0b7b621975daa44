package upstream

import (
	"io"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
	"go.uber.org/goleak"
)

type closeCounter struct{ n *atomic.Int32 }

func (c closeCounter) Close() error { c.n.Add(1); return nil }

func origDstTestCluster(cleanup time.Duration) *Cluster {
	return newCluster(&state.Cluster{Name: "passthrough", Type: state.ClusterOriginalDst,
		OriginalDstCleanupInterval: cleanup}, nilLogger())
}

func TestOriginalDstHostCached(t *testing.T) {
	c := origDstTestCluster(time.Hour)
	defer c.close()
	a := netip.MustParseAddrPort("127.0.0.1:8080")
	b := netip.MustParseAddrPort("127.0.0.1:8081")
	ha, hb := c.OriginalDstHost(a), c.OriginalDstHost(b)
	if ha == nil || hb == nil {
		t.Fatal("OriginalDstHost returned nil for a valid address")
	}
	if ha.Address != "127.0.0.1:8080" || hb.Address != "127.0.0.1:8081" {
		t.Errorf("addresses = %q, %q", ha.Address, hb.Address)
	}
	if ha == hb {
		t.Error("two addresses share one host")
	}
	if again := c.OriginalDstHost(a); again != ha {
		t.Error("same address gave a new host")
	}
	// An IPv4-mapped IPv6 address is the same destination.
	if mapped := c.OriginalDstHost(netip.MustParseAddrPort("[::ffff:127.0.0.1]:8080")); mapped != ha {
		t.Error("IPv4-mapped address gave a new host")
	}
	if c.Endpoint(ha) != c.Endpoint(c.OriginalDstHost(a)) {
		t.Error("endpoint for the same address is not reused")
	}
	for _, bad := range []netip.AddrPort{{}, netip.MustParseAddrPort("127.0.0.1:0")} {
		if h := c.OriginalDstHost(bad); h != nil {
			t.Errorf("OriginalDstHost(%v) = %v, want nil", bad, h.Address)
		}
	}
}

func TestOriginalDstCleanup(t *testing.T) {
	const interval = 50 * time.Millisecond
	c := origDstTestCluster(interval)
	defer c.close()
	idle := netip.MustParseAddrPort("127.0.0.1:9001")
	busy := netip.MustParseAddrPort("127.0.0.1:9002")
	hIdle := c.OriginalDstHost(idle)
	hBusy := c.OriginalDstHost(busy)
	hBusy.Acquire() // a request in flight keeps its host
	defer hBusy.Release()
	var closed atomic.Int32
	c.Endpoint(hIdle).Pool(PoolHTTP1, func(*Endpoint) io.Closer { return closeCounter{&closed} })

	// A pass forgets the host, then closes its pools: wait for both.
	deadline := time.Now().Add(5 * time.Second)
	for c.originalDstHosts() != 1 || closed.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("idle host not cleaned up: %d hosts, pool closed %d times", c.originalDstHosts(), closed.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(2 * interval) // later passes must not close it again
	if closed.Load() != 1 {
		t.Errorf("idle host's pool closed %d times, want 1", closed.Load())
	}
	if c.OriginalDstHost(busy) != hBusy {
		t.Error("host with a request in flight was replaced")
	}
	if h := c.OriginalDstHost(idle); h == hIdle {
		t.Error("cleaned-up address returned the retired host")
	}
}

func TestOriginalDstHostKeptWhileUsed(t *testing.T) {
	const interval = 40 * time.Millisecond
	c := origDstTestCluster(interval)
	defer c.close()
	a := netip.MustParseAddrPort("127.0.0.1:9003")
	h := c.OriginalDstHost(a)
	// Used more often than the interval: never retired.
	for range 10 {
		time.Sleep(interval / 4)
		if got := c.OriginalDstHost(a); got != h {
			t.Fatal("host in use was retired")
		}
	}
}

func TestOriginalDstCloseStopsLoop(t *testing.T) {
	before := goleak.IgnoreCurrent()
	c := origDstTestCluster(time.Hour)
	c.OriginalDstHost(netip.MustParseAddrPort("127.0.0.1:9004"))
	c.close()
	goleak.VerifyNone(t, before)
	if h := c.OriginalDstHost(netip.MustParseAddrPort("127.0.0.1:9004")); h != nil {
		t.Error("closed cluster made a host")
	}
}
