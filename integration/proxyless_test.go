package integration

// grpc-go proxyless comparisons: the same xDS resources go to a grpc-go
// client using the xds:/// resolver and to meshlet (through a plain grpc-go
// client), and both must behave the same, within binomial tolerance
// (within: 4.5 standard deviations). Helpers are in
// proxyless_helpers_test.go.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Weighted clusters 80/20 (gRFC A28): both clients split calls per RPC.
func TestProxylessWeightedSplit(t *testing.T) {
	a, b := startPGBackend(t, "a"), startPGBackend(t, "b")
	r := startProxyless(t, proxylessSetup{
		vhost:    vhost(weightedRoute(map[string]uint32{"a": 80, "b": 20}, "a", "b")),
		clusters: []*clusterv3.Cluster{proxylessCluster("a", nil), proxylessCluster("b", nil)},
		cla:      endpointsFor(t, map[string]string{"a": a.addr, "b": b.addr}),
	}, true)
	r.waitMeshRoutes()
	const n = 1000
	for _, c := range r.clients() {
		outs := unaryLoad(c.cc, n, 5*time.Second)
		got := countBy(outs, func(o callOutcome) string { return o.backend })
		if got["a"]+got["b"] != n {
			t.Errorf("%s: calls not answered by a or b: %v", c.name, got)
			continue
		}
		within(t, c.name+": share of a", got["a"], n, 0.8)
		t.Logf("%s: %v", c.name, got)
	}
}

// endpointsFor is one CLA per cluster, each with one endpoint.
func endpointsFor(t *testing.T, clusterToAddr map[string]string) []*endpointv3.ClusterLoadAssignment {
	t.Helper()
	var out []*endpointv3.ClusterLoadAssignment
	for c, addr := range clusterToAddr {
		out = append(out, pgEndpoints(t, c, "", addr))
	}
	return out
}

// Fault abort by percentage (gRFC A33): the HTTP status maps to a gRPC code
// (503 -> UNAVAILABLE) or grpc_status is used as is.
func TestProxylessFaultAbort(t *testing.T) {
	tests := []struct {
		name  string
		abort *faultv3.FaultAbort
		want  codes.Code
	}{
		{"http_status 503 at 30%", &faultv3.FaultAbort{
			ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503}, Percentage: percent(30)}, codes.Unavailable},
		{"grpc_status RESOURCE_EXHAUSTED at 30%", &faultv3.FaultAbort{
			ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: uint32(codes.ResourceExhausted)}, Percentage: percent(30)}, codes.ResourceExhausted},
		{"http_status 404 at 30%", &faultv3.FaultAbort{
			ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 404}, Percentage: percent(30)}, codes.Unimplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := startPGBackend(t, "be")
			r := startProxyless(t, proxylessSetup{
				filters:  []*hcmv3.HttpFilter{httpFilter(t, "envoy.filters.http.fault", &faultv3.HTTPFault{Abort: tt.abort})},
				vhost:    vhost(routeTo("be")),
				clusters: []*clusterv3.Cluster{proxylessCluster("be", nil)},
				cla:      endpointsFor(t, map[string]string{"be": be.addr}),
			}, true)
			r.waitMeshRoutes()
			const n = 1000
			for _, c := range r.clients() {
				outs := unaryLoad(c.cc, n, 5*time.Second)
				got := countBy(outs, func(o callOutcome) string {
					if o.code == codes.OK && o.backend == "be" {
						return "ok"
					}
					return o.code.String()
				})
				if got["ok"]+got[tt.want.String()] != n {
					t.Errorf("%s: outcomes %v, want only OK and %v", c.name, got, tt.want)
					continue
				}
				within(t, c.name+": aborted", got[tt.want.String()], n, 0.3)
				t.Logf("%s: %v", c.name, got)
			}
		})
	}
}

// Fault delay by percentage (gRFC A33): half the calls wait 250ms.
func TestProxylessFaultDelay(t *testing.T) {
	be := startPGBackend(t, "be")
	const delay = 250 * time.Millisecond
	r := startProxyless(t, proxylessSetup{
		filters:  []*hcmv3.HttpFilter{httpFilter(t, "envoy.filters.http.fault", delayFault(delay, 50))},
		vhost:    vhost(routeTo("be")),
		clusters: []*clusterv3.Cluster{proxylessCluster("be", nil)},
		cla:      endpointsFor(t, map[string]string{"be": be.addr}),
	}, true)
	r.waitMeshRoutes()
	const n = 200
	for _, c := range r.clients() {
		outs := unaryLoad(c.cc, n, 5*time.Second)
		delayed := 0
		for _, o := range outs {
			if o.code != codes.OK {
				t.Fatalf("%s: call failed with %v", c.name, o.code)
			}
			if o.took >= delay*3/5 {
				delayed++
			}
			if o.took > delay+2*time.Second {
				t.Errorf("%s: a call took %v, want at most the delay plus slack", c.name, o.took)
			}
		}
		within(t, c.name+": delayed", delayed, n, 0.5)
		t.Logf("%s: %d of %d delayed", c.name, delayed, n)
	}
}

// Retry on UNAVAILABLE (gRFC A44): a backend failing half its attempts at
// random, num_retries 2. A call fails only if all three attempts fail
// (p = 1/8) and takes 1.75 attempts on average; a retry_on that does not
// list unavailable gives p = 1/2 and one attempt per call.
func TestProxylessRetryUnavailable(t *testing.T) {
	tests := []struct {
		name         string
		retryOn      string
		afterHeaders bool // the backend sends headers before failing
		wantFail     float64
		wantAttempts float64 // mean per call
		attemptsVar  float64 // variance per call
	}{
		// attempts: 1, 2, 3 with probability 1/2, 1/4, 1/4.
		{"unavailable", "unavailable", false, 0.125, 1.75, 3.75 - 1.75*1.75},
		{"retry_on without unavailable", "cancelled,internal", false, 0.5, 1, 0},
		// A response that has started (headers sent, status in trailers)
		// is committed: neither retries it.
		{"unavailable after response headers", "unavailable", true, 0.5, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := startPGBackend(t, "be")
			r := startProxyless(t, proxylessSetup{
				vhost: vhost(catchAll("be", func(a *routev3.RouteAction) {
					a.RetryPolicy = &routev3.RetryPolicy{
						RetryOn:    tt.retryOn,
						NumRetries: wrapperspb.UInt32(2),
						RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
							BaseInterval: durationpb.New(time.Millisecond), MaxInterval: durationpb.New(5 * time.Millisecond)},
					}
				})),
				clusters: []*clusterv3.Cluster{proxylessCluster("be", nil)},
				cla:      endpointsFor(t, map[string]string{"be": be.addr}),
			}, true)
			r.waitMeshRoutes()
			be.failPermille.Store(500)
			be.headersBeforeFail.Store(tt.afterHeaders)
			const n = 800
			for _, c := range r.clients() {
				before := be.attempts.Load()
				outs := unaryLoad(c.cc, n, 5*time.Second)
				attempts := be.attempts.Load() - before
				got := countBy(outs, func(o callOutcome) string { return o.code.String() })
				if got["OK"]+got["Unavailable"] != n {
					t.Errorf("%s: outcomes %v, want only OK and Unavailable", c.name, got)
				}
				within(t, c.name+": failed calls", got["Unavailable"], n, tt.wantFail)
				sd := math.Sqrt(n * tt.attemptsVar)
				if d := math.Abs(float64(attempts) - n*tt.wantAttempts); d > 4.5*sd+0.5 {
					t.Errorf("%s: %d attempts for %d calls, want %.0f +- %.0f", c.name, attempts, n, n*tt.wantAttempts, 4.5*sd)
				}
				t.Logf("%s: %v, %d attempts", c.name, got, attempts)
			}
		})
	}
}

// num_retries above 4 (gRFC A44): both make 1 + num_retries attempts
// against a backend that always fails. (gRPC's service-config retry policy
// caps maxAttempts at 5; grpc-go v1.85's xDS path builds the policy from
// num_retries directly and does not apply that cap, so it agrees with Envoy.)
func TestProxylessRetryManyAttempts(t *testing.T) {
	be := startPGBackend(t, "be")
	r := startProxyless(t, proxylessSetup{
		vhost: vhost(catchAll("be", func(a *routev3.RouteAction) {
			a.RetryPolicy = &routev3.RetryPolicy{
				RetryOn:    "unavailable",
				NumRetries: wrapperspb.UInt32(6),
				RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
					BaseInterval: durationpb.New(time.Millisecond), MaxInterval: durationpb.New(2 * time.Millisecond)},
			}
		})),
		clusters: []*clusterv3.Cluster{proxylessCluster("be", nil)},
		cla:      endpointsFor(t, map[string]string{"be": be.addr}),
	}, true)
	r.waitMeshRoutes()
	be.failPermille.Store(1000)
	const n = 20
	for _, c := range r.clients() {
		const want = 7 * n
		before := be.attempts.Load()
		outs := unaryLoad(c.cc, n, 5*time.Second)
		if got := countBy(outs, func(o callOutcome) string { return o.code.String() }); got["Unavailable"] != n {
			t.Errorf("%s: outcomes %v, want all %d UNAVAILABLE", c.name, got, n)
		}
		if got := be.attempts.Load() - before; got != want {
			t.Errorf("%s: %d attempts for %d calls, want %d", c.name, got, n, want)
		}
	}
}

// max_stream_duration (gRFC A31) against a backend that never answers in
// time. Where Envoy's and gRPC's semantics differ, each side is held to
// its own: gRPC uses grpc_timeout_header_max as the stream's maximum when
// it is set (whether or not the call has a deadline); Envoy applies it only
// to a grpc-timeout header and otherwise uses max_stream_duration.
func TestProxylessMaxStreamDuration(t *testing.T) {
	be := startPGBackend(t, "be")
	be.sleep.Store(int64(10 * time.Second))
	caseRoute := func(name string, msd, headerMax *durationpb.Duration) *routev3.Route {
		r := catchAll("be", func(a *routev3.RouteAction) {
			a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: msd, GrpcTimeoutHeaderMax: headerMax}
			a.Timeout = durationpb.New(0)
		})
		r.Match.Headers = []*routev3.HeaderMatcher{{
			Name: "x-case",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: name}}},
		}}
		return r
	}
	ms := func(n int) *durationpb.Duration { return durationpb.New(time.Duration(n) * time.Millisecond) }
	r := startProxyless(t, proxylessSetup{
		vhost: vhost(
			caseRoute("msd", ms(300), nil),
			caseRoute("header-max-caps-deadline", ms(5000), ms(300)),
			caseRoute("header-max-no-deadline", ms(1200), ms(300)),
			caseRoute("header-max-zero", ms(300), ms(0)),
			catchAll("be", nil),
		),
		clusters: []*clusterv3.Cluster{proxylessCluster("be", nil)},
		cla:      endpointsFor(t, map[string]string{"be": be.addr}),
	}, true)
	// Routes are up when an uncapped call reaches the backend's sleep.
	be.sleep.Store(0)
	r.waitMeshRoutes()
	be.sleep.Store(int64(10 * time.Second))

	tests := []struct {
		name     string
		deadline time.Duration // the application's, 0 = none
		wantGRPC time.Duration // when grpc-go ends the call
		wantMesh time.Duration // when meshlet ends it
	}{
		{"msd", 0, 300 * time.Millisecond, 300 * time.Millisecond},
		{"header-max-caps-deadline", 5 * time.Second, 300 * time.Millisecond, 300 * time.Millisecond},
		// The documented divergence (A31 vs Envoy's grpc_timeout_header_max).
		{"header-max-no-deadline", 0, 300 * time.Millisecond, 1200 * time.Millisecond},
		// header max 0: the client's deadline, not max_stream_duration, governs.
		{"header-max-zero", 900 * time.Millisecond, 900 * time.Millisecond, 900 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range r.clients() {
				want := tt.wantGRPC
				if c.cc == r.meshCC {
					want = tt.wantMesh
				}
				ctx := metadata.AppendToOutgoingContext(context.Background(), "x-case", tt.name)
				var cancel context.CancelFunc = func() {}
				if tt.deadline > 0 {
					ctx, cancel = context.WithTimeout(ctx, tt.deadline)
				}
				start := time.Now()
				_, err := testgrpc.NewTestServiceClient(c.cc).UnaryCall(ctx, &testgrpc.SimpleRequest{})
				took := time.Since(start)
				cancel()
				if code := status.Code(err); code != codes.DeadlineExceeded {
					t.Errorf("%s: %v, want DEADLINE_EXCEEDED", c.name, err)
				}
				if took < want*4/5 || took > want+800*time.Millisecond {
					t.Errorf("%s: ended after %v, want about %v", c.name, took, want)
				}
			}
		})
	}
}

// auto_host_rewrite (gRFC A81): the call reaches the backend with the EDS
// endpoint's hostname as :authority. grpc-go honours it only with
// GRPC_EXPERIMENTAL_XDS_AUTHORITY_REWRITE=true (read once at start-up, so
// its client runs in a child process) and a trusted_xds_server.
func TestProxylessAutoHostRewrite(t *testing.T) {
	if cpAddr := os.Getenv("PROXYLESS_CHILD_CP"); cpAddr != "" {
		// Child: dial xds:/// and report the authorities the backend saw.
		cc := dialXDS(t, cpAddr, os.Getenv("PROXYLESS_CHILD_TARGET"))
		for range 4 {
			fmt.Println("PROXYLESS-AUTHORITY", authoritySeen(t, cc))
		}
		return
	}
	be := startPGBackend(t, "be")
	const host = "backend-1.proxyless.test"
	r := startProxyless(t, proxylessSetup{
		vhost: vhost(catchAll("be", func(a *routev3.RouteAction) {
			a.HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
		})),
		clusters: []*clusterv3.Cluster{proxylessCluster("be", nil)},
		cla:      []*endpointv3.ClusterLoadAssignment{pgEndpoints(t, "be", host, be.addr)},
	}, false)
	r.waitMeshRoutes()
	if got := authoritySeen(t, r.meshCC); got != host {
		t.Errorf("meshlet: backend saw :authority %q, want %q", got, host)
	}

	// The two children run at once: each one's TestMain builds ztunnel
	// (from the build cache) before it gets to the test.
	envs := []struct {
		value string
		want  string
	}{
		{"true", host},
		// Without the opt-in grpc-go keeps the target's authority.
		{"false", r.target},
	}
	outs := make([][]byte, len(envs))
	errs := make([]error, len(envs))
	var wg sync.WaitGroup
	for i, env := range envs {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestProxylessAutoHostRewrite$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(),
				"PROXYLESS_CHILD_CP="+r.cp.addr,
				"PROXYLESS_CHILD_TARGET="+r.target,
				"GRPC_EXPERIMENTAL_XDS_AUTHORITY_REWRITE="+env.value)
			outs[i], errs[i] = cmd.CombinedOutput()
		})
	}
	wg.Wait()
	for i, env := range envs {
		if errs[i] != nil {
			t.Fatalf("grpc-go child (authority rewrite %s): %v\n%s", env.value, errs[i], outs[i])
		}
		var seen []string
		sc := bufio.NewScanner(bytes.NewReader(outs[i]))
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "PROXYLESS-AUTHORITY "); ok {
				seen = append(seen, rest)
			}
		}
		if len(seen) != 4 {
			t.Fatalf("grpc-go child (authority rewrite %s) reported %q\n%s", env.value, seen, outs[i])
		}
		for _, s := range seen {
			if s != env.want {
				t.Errorf("grpc-go (GRPC_EXPERIMENTAL_XDS_AUTHORITY_REWRITE=%s): backend saw :authority %q, want %q", env.value, s, env.want)
			}
		}
	}
}

// authoritySeen makes one call and returns the :authority the backend saw.
func authoritySeen(t *testing.T, cc *grpc.ClientConn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var hdr metadata.MD
	if _, err := testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&hdr)); err != nil {
		t.Fatalf("%s: %v", cc.Target(), err)
	}
	return strings.Join(hdr.Get("x-authority"), ",")
}

// Outlier detection by failure percentage (gRFC A50): of two endpoints one
// fails every call; after a few 200ms intervals it is ejected and both
// clients see no more errors. Envoy's consecutive-5xx detector (which
// grpc-go does not have) is turned off so the same algorithm ejects. The
// failing endpoint either answers gRPC UNAVAILABLE trailers-only (Envoy
// maps grpc-status in response headers to HTTP 503 for outlier detection;
// grpc-go counts any non-OK status) or plain HTTP 503.
func TestProxylessOutlierFailurePercentage(t *testing.T) {
	tests := []struct {
		name string
		bad  func(t *testing.T) string // starts the failing endpoint
	}{
		{"grpc UNAVAILABLE trailers-only", func(t *testing.T) string {
			b := startPGBackend(t, "bad")
			b.failPermille.Store(1000)
			return b.addr
		}},
		{"HTTP 503", func(t *testing.T) string {
			return startFnBackend(t, func(_ int64, w http.ResponseWriter, _ *http.Request) {
				w.WriteHeader(http.StatusServiceUnavailable)
			}).addr
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			good := startPGBackend(t, "good")
			r := startProxyless(t, proxylessSetup{
				vhost: vhost(routeTo("be")),
				clusters: []*clusterv3.Cluster{proxylessCluster("be", func(c *clusterv3.Cluster) {
					c.OutlierDetection = &clusterv3.OutlierDetection{
						Interval:                           durationpb.New(200 * time.Millisecond),
						BaseEjectionTime:                   durationpb.New(30 * time.Second),
						MaxEjectionPercent:                 wrapperspb.UInt32(50),
						EnforcingConsecutive_5Xx:           wrapperspb.UInt32(0),
						EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(0),
						EnforcingSuccessRate:               wrapperspb.UInt32(0),
						FailurePercentageThreshold:         wrapperspb.UInt32(50),
						EnforcingFailurePercentage:         wrapperspb.UInt32(100),
						FailurePercentageMinimumHosts:      wrapperspb.UInt32(2),
						FailurePercentageRequestVolume:     wrapperspb.UInt32(10),
					}
				})},
				cla: []*endpointv3.ClusterLoadAssignment{pgEndpoints(t, "be", "", good.addr, tt.bad(t))},
			}, true)
			r.waitMeshRoutes()
			byCode := func(o callOutcome) string { return o.code.String() }
			for _, c := range r.clients() {
				// Load for several intervals, then count what a client
				// still sees.
				var warm []callOutcome
				for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline); {
					warm = append(warm, unaryLoad(c.cc, 40, 5*time.Second)...)
				}
				outs := unaryLoad(c.cc, 200, 5*time.Second)
				got := countBy(outs, func(o callOutcome) string {
					if o.code != codes.OK {
						return o.code.String()
					}
					return o.backend
				})
				if got["good"] != len(outs) {
					t.Errorf("%s: after ejection: %v, want all 200 calls on good (warm-up saw %v)", c.name, got, countBy(warm, byCode))
				}
				t.Logf("%s: warm-up %v; after: %v", c.name, countBy(warm, byCode), got)
			}
		})
	}
}
