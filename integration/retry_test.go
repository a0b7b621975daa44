package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// fnBackend is an HTTP/1.1 + h2c server running handler and counting
// requests; tests give each one its own behaviour.
type fnBackend struct {
	addr string
	hits atomic.Int64
}

func startFnBackend(t *testing.T, handler func(n int64, w http.ResponseWriter, r *http.Request)) *fnBackend {
	t.Helper()
	b := &fnBackend{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = lis.Addr().String()
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		handler(b.hits.Add(1), w, r)
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return b
}

// policyMesh is a control plane and proxy with one HTTP listener whose
// single virtual host and clusters the test supplies.
type policyMesh struct {
	t        *testing.T
	cp       *controlPlane
	listener string
}

// startPolicyMesh serves vh on a listener; clusters maps cluster name to
// endpoint addresses, all with lbPolicy; clusters named grpc* use HTTP/2
// upstream.
func startPolicyMesh(t *testing.T, vh *routev3.VirtualHost, lbPolicy clusterv3.Cluster_LbPolicy, clusters map[string][]string) *policyMesh {
	t.Helper()
	m := &policyMesh{t: t, cp: startControlPlane(t)}
	m.listener = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	res := []types.Resource{
		httpListener(t, "http", m.listener, "local"),
		&routev3.RouteConfiguration{Name: "local", VirtualHosts: []*routev3.VirtualHost{vh}},
	}
	for name, addrs := range clusters {
		// Clusters named grpc* speak HTTP/2 upstream (gRPC needs trailers).
		c := edsCluster(name, lbPolicy, strings.HasPrefix(name, "grpc"))
		// Envoy's default max_retries (3 concurrent) would turn retries
		// into UO overflows under the tests' concurrent load.
		c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxRetries: wrapperspb.UInt32(1000),
		}}}
		res = append(res, c, endpoints(t, name, addrs...))
	}
	m.cp.set(res...)
	startProxy(t, m.cp, proxyOpts{})
	eventually(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", m.listener)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
	return m
}

func (m *policyMesh) url(path string) string { return "http://" + m.listener + path }

func catchAll(cluster string, edit func(a *routev3.RouteAction)) *routev3.Route {
	r := routeTo(cluster)
	if edit != nil {
		edit(r.GetRoute())
	}
	return r
}

func vhost(routes ...*routev3.Route) *routev3.VirtualHost {
	return &routev3.VirtualHost{Name: "all", Domains: []string{"*"}, Routes: routes}
}

// loadResult counts what n sequential-ish requests saw.
type loadResult struct {
	mu     sync.Mutex
	status map[int]int
	flags  map[string]int
	errs   int
}

func runLoad(t *testing.T, c *http.Client, url string, n, workers int) *loadResult {
	t.Helper()
	res := &loadResult{status: map[int]int{}, flags: map[string]int{}}
	var wg sync.WaitGroup
	next := make(chan struct{})
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range next {
				resp, err := c.Get(url)
				res.mu.Lock()
				if err != nil {
					res.errs++
				} else {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					res.status[resp.StatusCode]++
					res.flags[resp.Header.Get("x-meshlet-response-flags")]++
				}
				res.mu.Unlock()
			}
		}()
	}
	for range n {
		next <- struct{}{}
	}
	close(next)
	wg.Wait()
	return res
}

func retryPolicy(on string, n uint32) *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:      on,
		NumRetries:   wrapperspb.UInt32(n),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)},
	}
}

// A backend failing every third request (33%) is recovered by a 5xx retry
// policy: the client sees no errors, and the backend sees the attempt
// count header on the retries.
func TestRetryRecoversFailingBackend(t *testing.T) {
	var retried atomic.Int64
	be := startFnBackend(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("x-envoy-attempt-count") == "2" {
			retried.Add(1)
		}
		if n%3 == 0 {
			w.WriteHeader(503)
			return
		}
		fmt.Fprint(w, "ok")
	})
	vh := vhost(catchAll("flaky", func(a *routev3.RouteAction) {
		a.RetryPolicy = retryPolicy("5xx", 5)
	}))
	vh.IncludeRequestAttemptCount = true
	vh.IncludeAttemptCountInResponse = true
	m := startPolicyMesh(t, vh, clusterv3.Cluster_ROUND_ROBIN, map[string][]string{"flaky": {be.addr}})

	for _, tc := range []struct {
		name string
		c    *http.Client
	}{{"http1", h1Client()}, {"h2c", h2cClient()}} {
		t.Run(tc.name, func(t *testing.T) {
			before := retried.Load()
			res := runLoad(t, tc.c, m.url("/"), 300, 4)
			// Five retries leave a (1/3)^6 chance per request to fail.
			if res.errs != 0 || res.status[200] < 297 || res.flags["UO"] > 0 {
				t.Fatalf("client saw errors: status %v, flags %v, transport errors %d", res.status, res.flags, res.errs)
			}
			if got := retried.Load() - before; got < 50 {
				t.Errorf("backend saw x-envoy-attempt-count: 2 on %d requests, want about 100", got)
			}
		})
	}
	// Without retries the same backend fails a third of the time.
	m.cp.set(
		httpListener(t, "http", m.listener, "local"),
		&routev3.RouteConfiguration{Name: "local", VirtualHosts: []*routev3.VirtualHost{vhost(catchAll("flaky", nil))}},
		edsCluster("flaky", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "flaky", be.addr),
	)
	eventually(t, 10*time.Second, func() error {
		res := runLoad(t, h1Client(), m.url("/"), 30, 1)
		if res.status[503] == 0 {
			return fmt.Errorf("no 503 without retries yet: %v", res.status)
		}
		return nil
	})
}

// Retries exhausted on a failing upstream answer with its last response
// and flag URX; the response carries the attempt count.
func TestRetryLimitExceededFlag(t *testing.T) {
	be := startFnBackend(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) })
	vh := vhost(catchAll("down", func(a *routev3.RouteAction) { a.RetryPolicy = retryPolicy("gateway-error", 2) }))
	vh.IncludeAttemptCountInResponse = true
	m := startPolicyMesh(t, vh, clusterv3.Cluster_ROUND_ROBIN, map[string][]string{"down": {be.addr}})
	resp, err := h1Client().Get(m.url("/"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("x-meshlet-response-flags") != "URX" || resp.Header.Get("x-envoy-attempt-count") != "3" {
		t.Errorf("got %d flags %q attempts %q; want 503 URX 3", resp.StatusCode,
			resp.Header.Get("x-meshlet-response-flags"), resp.Header.Get("x-envoy-attempt-count"))
	}
	if be.hits.Load() != 3 {
		t.Errorf("backend hits %d, want 3 (1 + num_retries 2)", be.hits.Load())
	}
}

// previous_hosts sends the retry to another endpoint: with random picks a
// retry would land on the broken endpoint half of the time without it.
func TestRetryPreviousHostsAvoidsFailedEndpoint(t *testing.T) {
	bad := startFnBackend(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503) })
	good := startFnBackend(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	vh := vhost(catchAll("pair", func(a *routev3.RouteAction) {
		p := retryPolicy("5xx", 1)
		p.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}}
		p.HostSelectionRetryMaxAttempts = 5
		a.RetryPolicy = p
	}))
	m := startPolicyMesh(t, vh, clusterv3.Cluster_RANDOM, map[string][]string{"pair": {bad.addr, good.addr}})
	res := runLoad(t, h1Client(), m.url("/"), 200, 4)
	if res.status[200] != 200 {
		t.Fatalf("statuses %v: a retry went back to the failed endpoint", res.status)
	}
	if bad.hits.Load() < 40 {
		t.Errorf("bad endpoint hit %d times; random picks should reach it about 100 times", bad.hits.Load())
	}
}

// A per-try timeout abandons a slow attempt and retries; the client gets
// the second attempt's answer long before the slow one would finish.
func TestPerTryTimeoutRetried(t *testing.T) {
	be := startFnBackend(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if n%2 == 1 {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
		}
		fmt.Fprint(w, "ok")
	})
	vh := vhost(catchAll("slow", func(a *routev3.RouteAction) {
		p := retryPolicy("5xx", 1)
		p.PerTryTimeout = durationpb.New(300 * time.Millisecond)
		a.RetryPolicy = p
	}))
	m := startPolicyMesh(t, vh, clusterv3.Cluster_ROUND_ROBIN, map[string][]string{"slow": {be.addr}})
	for _, tc := range []struct {
		name string
		c    *http.Client
	}{{"http1", h1Client()}, {"h2c", h2cClient()}} {
		t.Run(tc.name, func(t *testing.T) {
			be.hits.Store(0)
			start := time.Now()
			resp, err := tc.c.Get(m.url("/"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if took := time.Since(start); resp.StatusCode != 200 || took > 2*time.Second {
				t.Errorf("status %d after %v; want 200 after ~300ms", resp.StatusCode, took)
			}
			if be.hits.Load() != 2 {
				t.Errorf("backend hits %d, want 2", be.hits.Load())
			}
		})
	}
}

// gRPC UNAVAILABLE in a trailers-only response is retried with
// retry_on: unavailable.
func TestRetryGRPCUnavailable(t *testing.T) {
	be := startFnBackend(t, func(n int64, w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/grpc")
		if n%2 == 1 {
			w.Header().Set("grpc-status", "14")
			w.WriteHeader(200)
			return
		}
		w.Header().Set("trailer", "grpc-status")
		w.WriteHeader(200)
		_, _ = w.Write([]byte{0, 0, 0, 0, 0})
		w.Header().Set("grpc-status", "0")
	})
	vh := vhost(catchAll("grpc", func(a *routev3.RouteAction) { a.RetryPolicy = retryPolicy("unavailable", 1) }))
	m := startPolicyMesh(t, vh, clusterv3.Cluster_ROUND_ROBIN, map[string][]string{"grpc": {be.addr}})
	c := h2cClient()
	for i := range 10 {
		req, _ := http.NewRequest("POST", m.url("/pkg.Svc/Method"), nil)
		req.Header.Set("content-type", "application/grpc")
		req.Header.Set("te", "trailers")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		st := resp.Trailer.Get("grpc-status")
		if st == "" {
			st = resp.Header.Get("grpc-status")
		}
		if st != "0" {
			t.Fatalf("request %d: grpc-status %q, want 0 after a retry (HTTP %d, headers %v, trailers %v)", i, st, resp.StatusCode, resp.Header, resp.Trailer)
		}
	}
}
