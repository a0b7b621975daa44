package integration

import (
	"net/http"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestCircuitBreakerMaxRequests: with max_requests 2 and a slow backend,
// of 6 concurrent requests 2 are served and the rest get 503 UO at once.
func TestCircuitBreakerMaxRequests(t *testing.T) {
	b := startBackend(t, "slow")
	c := edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false)
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxRequests: wrapperspb.UInt32(2),
	}}}
	m := startODMesh(t, c, routeTo("svc"), b.addr)
	b.delay.Store(int64(time.Second))
	client := h1Client()
	type res struct {
		code  int
		flags string
		took  time.Duration
	}
	results := make([]res, 6)
	var wg sync.WaitGroup
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			resp, err := client.Get(m.url("/"))
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			results[i] = res{resp.StatusCode, resp.Header.Get("x-meshlet-response-flags"), time.Since(start)}
		}()
	}
	wg.Wait()
	served, overflow := 0, 0
	for _, r := range results {
		switch {
		case r.code == http.StatusOK:
			served++
		case r.code == 503 && r.flags == "UO":
			overflow++
			if r.took > 500*time.Millisecond {
				t.Errorf("overflow reply took %v; it must not wait for the backend", r.took)
			}
		default:
			t.Errorf("unexpected reply %+v", r)
		}
	}
	if served != 2 || overflow != 4 {
		t.Fatalf("served %d, overflowed %d; want 2 and 4 (%+v)", served, overflow, results)
	}
	// Capacity frees up when the requests end.
	b.delay.Store(0)
	if code, _, _, err := get(client, m.url("/"), nil); err != nil || code != 200 {
		t.Fatalf("after the burst: %d %v", code, err)
	}
}
