package integration

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/meshlet/meshlet"
)

// libraryClient is an http.Client whose transport is the embeddable
// library fed by the same control plane as the proxy under test.
func libraryClient(t *testing.T, ads string) *http.Client {
	t.Helper()
	srv := &meshlet.Server{ADSAddress: ads, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: srv.RoundTripper()}
}

// One table drives the proxy and the library under the same xDS: the
// weighted split and header routing come out the same through both.
func TestLibraryMatchesProxyRouting(t *testing.T) {
	tests := []struct {
		name   string
		routes []*routev3.Route
		hdr    map[string]string
		wantV2 float64
	}{
		{"weighted 80/20", []*routev3.Route{weightedRoute(map[string]uint32{"v1": 80, "v2": 20}, "v1", "v2")}, nil, 0.2},
		{"header match", []*routev3.Route{headerRoute("x-canary", "yes", "v2"), routeTo("v1")}, map[string]string{"x-canary": "yes"}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := startMesh(t, false, tc.routes...)
			clients := map[string]*http.Client{"proxy": h1Client(), "library": libraryClient(t, m.cp.addr)}
			for via, c := range clients {
				const n = 400
				got := split(t, c, m.url("/"), n, tc.hdr)
				if got["v1"]+got["v2"] != n {
					t.Fatalf("%s: %v", via, got)
				}
				within(t, via+" v2 share", got["v2"], n, tc.wantV2)
			}
		})
	}
}

// The same retry policy recovers the same failing backend through both.
func TestLibraryMatchesProxyRetries(t *testing.T) {
	be := startFnBackend(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("x-backend", "flaky")
	})
	vh := vhost(catchAll("flaky", func(a *routev3.RouteAction) { a.RetryPolicy = retryPolicy("5xx", 2) }))
	m := startPolicyMesh(t, vh, clusterv3.Cluster_ROUND_ROBIN, map[string][]string{"flaky": {be.addr}})
	for via, c := range map[string]*http.Client{"proxy": h1Client(), "library": libraryClient(t, m.cp.addr)} {
		before := be.hits.Load()
		res := runLoad(t, c, m.url("/"), 50, 1)
		if res.status[200] != 50 || res.errs != 0 {
			t.Errorf("%s: %v errs=%d, want 50 x 200", via, res.status, res.errs)
		}
		if d := be.hits.Load() - before; d != 100 {
			t.Errorf("%s: backend saw %d attempts, want 100", via, d)
		}
	}
}

func headerRoute(name, value, cluster string) *routev3.Route {
	r := routeTo(cluster)
	r.Match.Headers = []*routev3.HeaderMatcher{{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: value}}}}}
	return r
}
