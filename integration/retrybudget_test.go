package integration

import (
	"net/http"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// circuit_breakers retry_budget replaces max_retries (Envoy semantics):
// concurrent retries may be budget_percent of the active requests, never
// fewer than min_retry_concurrency. Ten requests fail at once against a
// slow, always-503 backend; with a 20% budget (floor 2) only two retry
// and the rest are answered 503 UO at once; with a floor of 10 all retry.
func TestRetryBudgetLimitsConcurrentRetries(t *testing.T) {
	const n = 10
	tests := []struct {
		name                   string
		percent                float64
		minConcurrency         uint32
		minRetried, maxRetried int
	}{
		{"20% of 10 active, floor 2", 20, 2, 1, 3},
		{"floor 10 admits all", 20, 10, n, n},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			be := r2Backend(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
				time.Sleep(300 * time.Millisecond)
				w.WriteHeader(503)
			})
			c := r2EDSCluster("svc", false)
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
				// max_retries would allow none; the budget replaces it.
				MaxRetries: wrapperspb.UInt32(0),
				RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{
					BudgetPercent:       &typev3.Percent{Value: tc.percent},
					MinRetryConcurrency: wrapperspb.UInt32(tc.minConcurrency),
				},
			}}}
			vh := vhost(catchAll("svc", func(a *routev3.RouteAction) { a.RetryPolicy = retryPolicy("5xx", 1) }))
			m := startR2Mesh(t, vh, nil, r2Cluster{c, []string{be.addr}})
			be.hits.Store(0)

			client := h1Client()
			flags := make([]string, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range flags {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					resp, err := client.Get(m.url("/"))
					if err != nil {
						t.Error(err)
						return
					}
					resp.Body.Close()
					if resp.StatusCode != 503 {
						t.Errorf("status %d, want 503", resp.StatusCode)
					}
					flags[i] = resp.Header.Get("x-meshlet-response-flags")
				}()
			}
			close(start)
			wg.Wait()
			retried, overflow := 0, 0
			for _, f := range flags {
				switch f {
				case "URX": // retried once, failed again: retries used up
					retried++
				case "UO": // the budget refused the retry
					overflow++
				default:
					t.Errorf("unexpected flags %q", f)
				}
			}
			if retried < tc.minRetried || retried > tc.maxRetried || retried+overflow != n {
				t.Fatalf("retried %d, overflowed %d (flags %v); want %d..%d retried", retried, overflow, flags, tc.minRetried, tc.maxRetried)
			}
			if got := be.hits.Load(); got != int64(n+retried) {
				t.Fatalf("backend saw %d requests, want %d first attempts + %d retries", got, n, retried)
			}
		})
	}
}
