package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ---- helpers for HTTP filter tests ----

// filterListener is an LDS listener whose HCM runs filters before the
// router and takes routes from RDS rdsName.
func filterListener(t *testing.T, name, addr, rdsName string, filters ...*hcmv3.HttpFilter) *listenerv3.Listener {
	t.Helper()
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: rdsName,
			ConfigSource: &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			},
		}},
		HttpFilters: append(filters, &hcmv3.HttpFilter{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})},
		}),
	}
	return listenerOn(t, name, addr, &listenerv3.Filter{
		Name:       "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)},
	})
}

func httpFilter(t *testing.T, name string, m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, m)}}
}

func percent(n uint32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_HUNDRED}
}

func abortFault(code uint32, pct uint32) *faultv3.HTTPFault {
	return &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
		ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: code}, Percentage: percent(pct)}}
}

func delayFault(d time.Duration, pct uint32) *faultv3.HTTPFault {
	return &faultv3.HTTPFault{Delay: &faultcommonv3.FaultDelay{
		FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)}, Percentage: percent(pct)}}
}

// filterMesh is a control plane and a proxy with one HTTP listener running
// the given filters, one virtual host, and EDS clusters.
type filterMesh struct {
	t        *testing.T
	cp       *controlPlane
	listener string
}

func startFilterMesh(t *testing.T, filters []*hcmv3.HttpFilter, vh *routev3.VirtualHost, http2 bool, clusters map[string]string, extra ...types.Resource) *filterMesh {
	t.Helper()
	m := &filterMesh{t: t, cp: startControlPlane(t)}
	m.listener = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	res := append([]types.Resource{
		filterListener(t, "http", m.listener, "local", filters...),
		&routev3.RouteConfiguration{Name: "local", VirtualHosts: []*routev3.VirtualHost{vh}},
	}, extra...)
	for name, addr := range clusters {
		res = append(res, edsCluster(name, clusterv3.Cluster_ROUND_ROBIN, http2), endpoints(t, name, addr))
	}
	m.cp.set(res...)
	startProxy(t, m.cp, proxyOpts{})
	waitListening(t, m.listener)
	return m
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	eventually(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		return c.Close()
	})
}

func (m *filterMesh) url(path string) string { return "http://" + m.listener + path }

// do sends one GET and returns status, response flags and body.
func do(t *testing.T, c *http.Client, url string, hdr ...string) (int, string, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("x-meshlet-response-flags"), string(b)
}

// ---- tests ----

// TestFaultAbortPercentage is the seeds' example: a 503 abort at 30% seen
// by an HTTP/1.1 client as 30% within binomial tolerance, each abort with
// Envoy's body and flag FI, the rest served by the backend.
func TestFaultAbortPercentage(t *testing.T) {
	be := startBackend(t, "v1")
	m := startFilterMesh(t, []*hcmv3.HttpFilter{httpFilter(t, "envoy.filters.http.fault", abortFault(503, 30))},
		vhost(routeTo("v1")), false, map[string]string{"v1": be.addr})
	c := h1Client()
	eventually(t, 10*time.Second, func() error {
		if code, flags, _ := do(t, c, m.url("/")); code != 200 && flags != "FI" {
			return fmt.Errorf("status %d flags %q", code, flags)
		}
		return nil
	})
	const n = 1000
	res := runLoad(t, c, m.url("/"), n, 8)
	if res.errs != 0 || res.status[200]+res.status[503] != n {
		t.Fatalf("unexpected outcomes: %+v", res.status)
	}
	within(t, "503 aborts", res.status[503], n, 0.30)
	if res.flags["FI"] != res.status[503] {
		t.Fatalf("FI flags %d, 503s %d", res.flags["FI"], res.status[503])
	}
	if got := be.hits.Load(); got < int64(res.status[200]) {
		t.Fatalf("backend saw %d, client got %d 200s", got, res.status[200])
	}
}

// TestFaultDelayAndRouteOverride: the listener's fault config delays
// nothing (0%); a route's typed_per_filter_config delays 300ms, another
// route's disables the filter; the virtual host's aborts with 418 for the
// remaining routes.
func TestFaultDelayAndRouteOverride(t *testing.T) {
	be := startBackend(t, "v1")
	slow := routeTo("v1")
	slow.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/slow"}
	slow.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.fault": anyOf(t, delayFault(300*time.Millisecond, 100))}
	off := routeTo("v1")
	off.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/off"}
	off.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.fault": anyOf(t, &routev3.FilterConfig{Disabled: true})}
	vh := vhost(slow, off, routeTo("v1"))
	vh.TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.fault": anyOf(t, abortFault(418, 100))}
	m := startFilterMesh(t, []*hcmv3.HttpFilter{httpFilter(t, "envoy.filters.http.fault", delayFault(time.Second, 0))},
		vh, false, map[string]string{"v1": be.addr})
	c := h1Client()
	eventually(t, 10*time.Second, func() error {
		if code, _, _ := do(t, c, m.url("/off")); code != 200 {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})
	for range 3 {
		start := time.Now()
		code, flags, body := do(t, c, m.url("/slow"))
		el := time.Since(start)
		if code != 200 || flags != "DI" || !strings.HasPrefix(body, "v1 ") || el < 300*time.Millisecond || el > 2*time.Second {
			t.Fatalf("/slow: %d %q %q after %v", code, flags, body, el)
		}
	}
	if code, flags, _ := do(t, c, m.url("/other")); code != 418 || flags != "FI" {
		t.Fatalf("/other: %d %q, want the virtual host's 418 abort", code, flags)
	}
	start := time.Now()
	if code, flags, _ := do(t, c, m.url("/off")); code != 200 || flags != "-" || time.Since(start) > 250*time.Millisecond {
		t.Fatalf("/off: %d %q", code, flags)
	}
}

// TestFaultHeaderControlled: header_abort and header_delay take the status
// and delay from the request; without the headers nothing is injected.
func TestFaultHeaderControlled(t *testing.T) {
	be := startBackend(t, "v1")
	f := &faultv3.HTTPFault{
		Delay: &faultcommonv3.FaultDelay{FaultDelaySecifier: &faultcommonv3.FaultDelay_HeaderDelay_{
			HeaderDelay: &faultcommonv3.FaultDelay_HeaderDelay{}}, Percentage: percent(100)},
		Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HeaderAbort_{
			HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}}, Percentage: percent(100)},
	}
	m := startFilterMesh(t, []*hcmv3.HttpFilter{httpFilter(t, "envoy.filters.http.fault", f)},
		vhost(routeTo("v1")), false, map[string]string{"v1": be.addr})
	c := h1Client()
	eventually(t, 10*time.Second, func() error {
		if code, _, _ := do(t, c, m.url("/")); code != 200 {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})
	if code, flags, body := do(t, c, m.url("/"), "x-envoy-fault-abort-request", "429"); code != 429 || flags != "FI" || body != "fault filter abort" {
		t.Fatalf("header abort: %d %q %q", code, flags, body)
	}
	if code, _, _ := do(t, c, m.url("/"), "x-envoy-fault-abort-request", "429", "x-envoy-fault-abort-request-percentage", "0"); code != 200 {
		t.Fatalf("header abort at 0%%: %d", code)
	}
	start := time.Now()
	code, flags, _ := do(t, c, m.url("/"), "x-envoy-fault-delay-request", "250")
	if el := time.Since(start); code != 200 || flags != "DI" || el < 250*time.Millisecond || el > 2*time.Second {
		t.Fatalf("header delay: %d %q after %v", code, flags, el)
	}
	start = time.Now()
	if code, flags, _ := do(t, c, m.url("/"), "x-envoy-fault-delay-request", "200", "x-envoy-fault-abort-request", "503"); code != 503 ||
		flags != "DI,FI" || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("delay then abort: %d %q", code, flags)
	}
}

// TestFaultGRPCAbort: a grpc-go client through the proxy sees the
// configured grpc_status (HTTP 200 + grpc-status), scoped to one method by
// the fault's header matcher on :path; other methods reach the server.
func TestFaultGRPCAbort(t *testing.T) {
	g := startGRPCBackend(t, "g1")
	f := &faultv3.HTTPFault{
		Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: uint32(codes.ResourceExhausted)}, Percentage: percent(100)},
		Headers: []*routev3.HeaderMatcher{{Name: ":path", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
			StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "/grpc.testing.TestService/EmptyCall"}}}}},
	}
	m := startFilterMesh(t, []*hcmv3.HttpFilter{httpFilter(t, "envoy.filters.http.fault", f)},
		vhost(grpcRoute("/", "g")), true, map[string]string{"g": g})
	cc, err := grpc.NewClient(m.listener, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := testgrpc.NewTestServiceClient(cc)
	eventually(t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		return err
	})
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := client.EmptyCall(ctx, &testgrpc.Empty{})
		cancel()
		if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "fault filter abort") {
			t.Fatalf("EmptyCall: %v, want ResourceExhausted fault filter abort", err)
		}
	}
}

// TestFaultUnknownRequiredFilterNACKed: a required filter we do not run
// makes the listener NACKed with an error naming it; marked optional it is
// skipped and the listener serves.
func TestFaultUnknownRequiredFilterNACKed(t *testing.T) {
	be := startBackend(t, "v1")
	cp := startControlPlane(t)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	unknown := &hcmv3.HttpFilter{Name: "envoy.filters.http.ext_authz"}
	res := func(f *hcmv3.HttpFilter) []types.Resource {
		return []types.Resource{filterListener(t, "http", addr, "local", f),
			&routev3.RouteConfiguration{Name: "local", VirtualHosts: []*routev3.VirtualHost{vhost(routeTo("v1"))}},
			edsCluster("v1", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "v1", be.addr)}
	}
	cp.set(res(unknown)...)
	startProxy(t, cp, proxyOpts{noReadyWait: true})
	eventually(t, 10*time.Second, func() error {
		for _, msg := range cp.nackMessages() {
			if strings.Contains(msg, `HTTP filter "envoy.filters.http.ext_authz"`) {
				return nil
			}
		}
		return fmt.Errorf("no NACK naming the filter yet: %q", cp.nackMessages())
	})
	unknown.IsOptional = true
	cp.set(res(unknown)...)
	waitListening(t, addr)
	c := h1Client()
	eventually(t, 10*time.Second, func() error {
		if code, _, _ := do(t, c, "http://"+addr+"/"); code != 200 {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})
}

// TestFaultAbortRecoveredByRetry is the seeds' example with retries: a
// fault filter runs before the router, so a retry policy on the same hop
// never sees its aborts (as in Envoy). Here the proxy serves two hops: the
// client's listener routes with retry_on 5xx to cluster "faulty", whose
// endpoint is the proxy's second listener injecting 503 at 30% in front of
// the backend. Direct to the inner hop a client sees 30% 503s; through the
// outer hop it sees none.
func TestFaultAbortRecoveredByRetry(t *testing.T) {
	be := startBackend(t, "v1")
	cp := startControlPlane(t)
	outer := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	inner := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	retrying := routeTo("faulty")
	retrying.GetRoute().RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(10),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(time.Millisecond)}}
	// Envoy's default max_retries circuit breaker (3 concurrent retries)
	// would turn some retries into UO overflows under 8 workers.
	faulty := edsCluster("faulty", clusterv3.Cluster_ROUND_ROBIN, false)
	faulty.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxRetries: wrapperspb.UInt32(1000)}}}
	cp.set(
		filterListener(t, "outer", outer, "outer"),
		&routev3.RouteConfiguration{Name: "outer", VirtualHosts: []*routev3.VirtualHost{vhost(retrying)}},
		filterListener(t, "inner", inner, "inner", httpFilter(t, "envoy.filters.http.fault", abortFault(503, 30))),
		&routev3.RouteConfiguration{Name: "inner", VirtualHosts: []*routev3.VirtualHost{vhost(routeTo("v1"))}},
		faulty, endpoints(t, "faulty", inner),
		edsCluster("v1", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "v1", be.addr),
	)
	startProxy(t, cp, proxyOpts{})
	c := h1Client()
	eventually(t, 10*time.Second, func() error {
		if code, _, _ := do(t, c, "http://"+outer+"/"); code != 200 {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})
	// Direct to the inner hop the faults show.
	direct := runLoad(t, c, "http://"+inner+"/", 400, 8)
	within(t, "direct 503s", direct.status[503], 400, 0.30)

	const n = 500
	res := runLoad(t, c, "http://"+outer+"/", n, 8)
	if res.errs != 0 || res.status[200] != n {
		t.Fatalf("through retries: %+v flags %v, %d transport errors; want %d x 200", res.status, res.flags, res.errs, n)
	}
}
