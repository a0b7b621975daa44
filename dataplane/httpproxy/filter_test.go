package httpproxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

var (
	all  = state.Fraction{Numerator: 100, Denominator: state.PerHundred}
	none = state.Fraction{Numerator: 0, Denominator: state.PerHundred}
)

// echoBackend answers 200 "ok" and records the last x-rl-shadow header and
// the number of requests.
type echoBackend struct {
	*backend
	hits   atomic.Int64
	shadow atomic.Value
}

func newEchoBackend(t *testing.T) *echoBackend {
	b := &echoBackend{}
	b.backend = newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		b.shadow.Store(r.Header.Get("X-Rl-Shadow"))
		_, _ = io.WriteString(w, "ok")
	}))
	return b
}

// filterHCM routes /a and /b (route "a" and "b") and everything else to
// cluster "be", with filters before the router.
func filterHCM(filters ...*state.HTTPFilter) *state.HTTPConnectionManager {
	h := simpleHCM("be")
	vh := h.RouteConfig.VirtualHosts[0]
	mk := func(name, path string) *state.Route {
		return &state.Route{Name: name, Match: state.RouteMatch{Kind: state.PathPrefix, Path: path, CaseSensitive: true},
			Action: &state.RouteAction{Cluster: "be", Timeout: 5 * time.Second}}
	}
	vh.Routes = append([]*state.Route{mk("a", "/a"), mk("b", "/b")}, vh.Routes...)
	h.Filters = filters
	return h
}

func (e *proxyEnv) get(t *testing.T, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+e.addr+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := e.client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestFaultAbortH1(t *testing.T) {
	be := newEchoBackend(t)
	abort503 := &state.HTTPFilter{Name: "fault", Fault: &state.FaultFilter{Abort: &state.FaultAbort{HTTPStatus: 503, Percentage: all}}}
	headerAbort := &state.HTTPFilter{Name: "fault", Fault: &state.FaultFilter{Abort: &state.FaultAbort{FromHeader: true, Percentage: all}}}
	scoped := &state.HTTPFilter{Name: "fault", Fault: &state.FaultFilter{Abort: &state.FaultAbort{HTTPStatus: 500, Percentage: all},
		DownstreamNodes: []string{"canary"}}}
	tests := []struct {
		name      string
		f         *state.HTTPFilter
		hdr       []string
		wantCode  int
		wantFlags string
		wantBody  string
	}{
		{"abort", abort503, nil, 503, "FI", BodyFaultAbort},
		{"zero percent passes", &state.HTTPFilter{Name: "fault", Fault: &state.FaultFilter{Abort: &state.FaultAbort{HTTPStatus: 503, Percentage: none}}},
			nil, 200, "-", "ok"},
		{"header abort", headerAbort, []string{"x-envoy-fault-abort-request", "418"}, 418, "FI", BodyFaultAbort},
		{"header abort absent", headerAbort, nil, 200, "-", "ok"},
		{"downstream node match", scoped, []string{"x-envoy-downstream-service-node", "canary"}, 500, "FI", BodyFaultAbort},
		{"downstream node mismatch", scoped, []string{"x-envoy-downstream-service-node", "prod"}, 200, "-", "ok"},
		{"other cluster", &state.HTTPFilter{Name: "fault", Fault: &state.FaultFilter{UpstreamCluster: "other",
			Abort: &state.FaultAbort{HTTPStatus: 503, Percentage: all}}}, nil, 200, "-", "ok"},
		{"disabled filter", &state.HTTPFilter{Name: "fault", Disabled: true, Fault: abort503.Fault}, nil, 200, "-", "ok"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newProxyEnv(t, filterHCM(tt.f), h1Cluster("be", be.hostport()))
			resp, body := e.get(t, "/", tt.hdr...)
			if resp.StatusCode != tt.wantCode || body != tt.wantBody || resp.Header.Get(HeaderResponseFlags) != tt.wantFlags {
				t.Fatalf("got %d %q flags %q; want %d %q flags %q", resp.StatusCode, body,
					resp.Header.Get(HeaderResponseFlags), tt.wantCode, tt.wantBody, tt.wantFlags)
			}
		})
	}
}

// TestFaultOverrides: the route's typed_per_filter_config beats the
// virtual host's, which beats the listener's; a FilterConfig{disabled}
// turns the filter off for one route.
func TestFaultOverrides(t *testing.T) {
	be := newEchoBackend(t)
	abort := func(code int) *state.FaultFilter {
		return &state.FaultFilter{Abort: &state.FaultAbort{HTTPStatus: code, Percentage: all}}
	}
	hcm := filterHCM(&state.HTTPFilter{Name: "fault", Fault: abort(500)})
	vh := hcm.RouteConfig.VirtualHosts[0]
	vh.FilterOverrides = map[string]*state.FilterOverride{"fault": {Fault: abort(501)}}
	vh.Routes[0].FilterOverrides = map[string]*state.FilterOverride{"fault": {Fault: abort(502)}}
	vh.Routes[1].FilterOverrides = map[string]*state.FilterOverride{"fault": {Disabled: true}}
	e := newProxyEnv(t, hcm, h1Cluster("be", be.hostport()))
	for path, want := range map[string]int{"/a": 502, "/b": 200, "/c": 501} {
		if resp, _ := e.get(t, path); resp.StatusCode != want {
			t.Errorf("%s: status %d, want %d", path, resp.StatusCode, want)
		}
	}
	// Without the vhost override the listener config applies.
	hcm2 := filterHCM(&state.HTTPFilter{Name: "fault", Fault: abort(500)})
	e2 := newProxyEnv(t, hcm2, h1Cluster("be", be.hostport()))
	if resp, _ := e2.get(t, "/c"); resp.StatusCode != 500 {
		t.Errorf("/c without vhost override: status %d, want 500", resp.StatusCode)
	}
}

func TestFaultDelayH1(t *testing.T) {
	be := newEchoBackend(t)
	f := &state.HTTPFilter{Name: "fault", Fault: &state.FaultFilter{
		Delay: &state.FaultDelay{Fixed: 300 * time.Millisecond, Percentage: all}}}
	e := newProxyEnv(t, filterHCM(f), h1Cluster("be", be.hostport()))
	start := time.Now()
	resp, body := e.get(t, "/")
	if el := time.Since(start); el < 300*time.Millisecond || el > 3*time.Second {
		t.Fatalf("took %v, want about 300ms", el)
	}
	if resp.StatusCode != 200 || body != "ok" || resp.Header.Get(HeaderResponseFlags) != "DI" {
		t.Fatalf("got %d %q flags %q", resp.StatusCode, body, resp.Header.Get(HeaderResponseFlags))
	}

	// Delay then abort: both flags.
	f.Fault.Abort = &state.FaultAbort{HTTPStatus: 503, Percentage: all}
	e2 := newProxyEnv(t, filterHCM(f), h1Cluster("be", be.hostport()))
	resp, _ = e2.get(t, "/")
	if resp.StatusCode != 503 || resp.Header.Get(HeaderResponseFlags) != "DI,FI" {
		t.Fatalf("delay+abort: got %d flags %q", resp.StatusCode, resp.Header.Get(HeaderResponseFlags))
	}
}

// TestFaultDelayClientCancelH1: a client that closes its connection during
// a long delay releases the request at once (the active fault count drops
// long before the delay would end) and the backend never sees it.
func TestFaultDelayClientCancelH1(t *testing.T) {
	be := newEchoBackend(t)
	ff := &state.FaultFilter{Delay: &state.FaultDelay{Fixed: 20 * time.Second, Percentage: all},
		MaxActiveFaults: 10, HasMaxActive: true}
	e := newProxyEnv(t, filterHCM(&state.HTTPFilter{Name: "fault", Fault: ff}), h1Cluster("be", be.hostport()))
	c := e.dial()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	st := faultStates.get(ff, newFaultState)
	waitFor(t, "fault active", func() bool { return st.active.Load() == 1 })
	c.Close()
	start := time.Now()
	waitFor(t, "fault released", func() bool { return st.active.Load() == 0 })
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("released after %v", el)
	}
	if be.hits.Load() != 0 {
		t.Fatalf("backend saw %d requests", be.hits.Load())
	}
}

// TestFaultMaxActive: with max_active_faults 1 and one request held in a
// delay, a second request is not faulted.
func TestFaultMaxActive(t *testing.T) {
	be := newEchoBackend(t)
	ff := &state.FaultFilter{Delay: &state.FaultDelay{FromHeader: true, Percentage: all},
		MaxActiveFaults: 1, HasMaxActive: true}
	e := newProxyEnv(t, filterHCM(&state.HTTPFilter{Name: "fault", Fault: ff}), h1Cluster("be", be.hostport()))
	c := e.dial()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nx-envoy-fault-delay-request: 1500\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	st := faultStates.get(ff, newFaultState)
	waitFor(t, "fault active", func() bool { return st.active.Load() == 1 })
	start := time.Now()
	resp, _ := e.get(t, "/", "x-envoy-fault-delay-request", "1500")
	if el := time.Since(start); el > time.Second || resp.Header.Get(HeaderResponseFlags) != "-" {
		t.Fatalf("second request took %v flags %q: it was faulted", el, resp.Header.Get(HeaderResponseFlags))
	}
	resp, _ = c.read(t, "GET")
	if resp.Header.Get(HeaderResponseFlags) != "DI" {
		t.Fatalf("first request flags %q, want DI", resp.Header.Get(HeaderResponseFlags))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for range 500 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestLocalRateLimitH1(t *testing.T) {
	be := newEchoBackend(t)
	rl := &state.LocalRateLimit{StatPrefix: "rl", Status: 429, Enabled: all, Enforced: all,
		Bucket:               &state.TokenBucket{MaxTokens: 2, TokensPerFill: 1, FillInterval: time.Hour},
		ResponseHeadersToAdd: []state.HeaderValueOption{{Key: "x-limit", Value: "hit", Action: state.OverwriteIfExistsOrAdd}}}
	e := newProxyEnv(t, filterHCM(&state.HTTPFilter{Name: "rl", LocalRateLimit: rl}), h1Cluster("be", be.hostport()))
	for i := range 2 {
		if resp, _ := e.get(t, "/"); resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	resp, body := e.get(t, "/")
	if resp.StatusCode != 429 || body != BodyLocalRateLimited || resp.Header.Get(HeaderResponseFlags) != "RL" ||
		resp.Header.Get(HeaderRateLimited) != "true" || resp.Header.Get("x-limit") != "hit" {
		t.Fatalf("got %d %q headers %v", resp.StatusCode, body, resp.Header)
	}
	if be.hits.Load() != 2 {
		t.Fatalf("backend hits %d, want 2", be.hits.Load())
	}
}

func TestLocalRateLimitModes(t *testing.T) {
	bucket := func() *state.TokenBucket {
		return &state.TokenBucket{MaxTokens: 1, TokensPerFill: 1, FillInterval: time.Hour}
	}
	tests := []struct {
		name       string
		rl         *state.LocalRateLimit
		wantSecond int
		wantShadow string
	}{
		{"not enabled", &state.LocalRateLimit{Status: 429, Bucket: bucket(), Enabled: none, Enforced: all}, 200, ""},
		{"not enforced adds request headers", &state.LocalRateLimit{Status: 429, Bucket: bucket(), Enabled: all, Enforced: none,
			RequestHeadersToAddWhenNotEnforced: []state.HeaderValueOption{{Key: "x-rl-shadow", Value: "would-limit"}}}, 200, "would-limit"},
		{"no bucket limits nothing", &state.LocalRateLimit{Status: 429, Enabled: all, Enforced: all}, 200, ""},
		{"custom status", &state.LocalRateLimit{Status: 503, Bucket: bucket(), Enabled: all, Enforced: all}, 503, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			be := newEchoBackend(t)
			e := newProxyEnv(t, filterHCM(&state.HTTPFilter{Name: "rl", LocalRateLimit: tt.rl}), h1Cluster("be", be.hostport()))
			if resp, _ := e.get(t, "/"); resp.StatusCode != 200 {
				t.Fatalf("first: %d", resp.StatusCode)
			}
			resp, _ := e.get(t, "/")
			if resp.StatusCode != tt.wantSecond {
				t.Fatalf("second: %d, want %d", resp.StatusCode, tt.wantSecond)
			}
			if tt.wantSecond == 200 {
				if got, _ := be.shadow.Load().(string); got != tt.wantShadow {
					t.Fatalf("backend saw x-rl-shadow %q, want %q", got, tt.wantShadow)
				}
			}
		})
	}
}

// TestLocalRateLimitPerRoute: a route's own config has its own bucket; the
// other routes share the listener's.
func TestLocalRateLimitPerRoute(t *testing.T) {
	be := newEchoBackend(t)
	mk := func(n uint32) *state.LocalRateLimit {
		return &state.LocalRateLimit{Status: 429, Enabled: all, Enforced: all,
			Bucket: &state.TokenBucket{MaxTokens: n, TokensPerFill: 1, FillInterval: time.Hour}}
	}
	hcm := filterHCM(&state.HTTPFilter{Name: "rl", LocalRateLimit: mk(3)})
	hcm.RouteConfig.VirtualHosts[0].Routes[0].FilterOverrides = map[string]*state.FilterOverride{"rl": {LocalRateLimit: mk(1)}}
	e := newProxyEnv(t, hcm, h1Cluster("be", be.hostport()))
	var got []int
	for _, p := range []string{"/a", "/a", "/b", "/c", "/b", "/c"} {
		resp, _ := e.get(t, p)
		got = append(got, resp.StatusCode)
	}
	want := []int{200, 429, 200, 200, 200, 429}
	if !equalInts(got, want) {
		t.Fatalf("statuses %v, want %v", got, want)
	}
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestFiltersH2: the same hook serves HTTP/2: gRPC aborts answer 200 with
// the configured grpc-status; rate limited gRPC calls get UNAVAILABLE (or
// RESOURCE_EXHAUSTED when configured); a cancelled stream ends its delay.
func TestFiltersH2(t *testing.T) {
	be := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", r.Header.Get("Content-Type"))
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(200)
		w.Header().Set("Grpc-Status", "0")
	}))
	grpcAbort := &state.FaultFilter{Abort: &state.FaultAbort{GRPCStatus: 8, HasGRPCStatus: true, Percentage: all},
		Headers: []state.HeaderMatcher{{Name: "x-fault", Kind: state.HeaderPresent, Present: true}}}
	httpAbort := &state.FaultFilter{Abort: &state.FaultAbort{HTTPStatus: 503, Percentage: all},
		Headers: []state.HeaderMatcher{{Name: "x-fault-http", Kind: state.HeaderPresent, Present: true}}}
	delay := &state.FaultFilter{Delay: &state.FaultDelay{Fixed: 20 * time.Second, Percentage: all}, MaxActiveFaults: 5, HasMaxActive: true,
		Headers: []state.HeaderMatcher{{Name: "x-slow", Kind: state.HeaderPresent, Present: true}}}
	rl := &state.LocalRateLimit{Status: 429, Enabled: all, Enforced: all,
		Bucket: &state.TokenBucket{MaxTokens: 1, TokensPerFill: 1, FillInterval: time.Hour}}
	hcm := &state.HTTPConnectionManager{Codec: state.CodecHTTP2, Filters: []*state.HTTPFilter{
		{Name: "f1", Fault: grpcAbort}, {Name: "f2", Fault: httpAbort}, {Name: "f3", Fault: delay},
		{Name: "rl", LocalRateLimit: rl}}}
	e := newH2Env(t, h2EnvOpts{hcm: hcm, rc: routeAll("be"),
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, be.addr)}})
	client, _ := h2cClient(t)
	do := func(ctx context.Context, hdr ...string) (*http.Response, error) {
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+e.addr+"/svc/M", strings.NewReader(""))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	grpcStatus := func(r *http.Response) string {
		if v := r.Header.Get("Grpc-Status"); v != "" {
			return v
		}
		return r.Trailer.Get("Grpc-Status")
	}
	ctx := context.Background()

	resp, err := do(ctx, "x-fault", "1")
	if err != nil || resp.StatusCode != 200 || grpcStatus(resp) != "8" || resp.Header.Get(HeaderResponseFlags) != "FI" {
		t.Fatalf("grpc abort: %v %+v", err, resp)
	}
	resp, err = do(ctx, "x-fault-http", "1")
	if err != nil || resp.StatusCode != 200 || grpcStatus(resp) != "14" {
		t.Fatalf("http abort on grpc: %v %+v", err, resp)
	}

	// The delayed stream is cancelled by the client: the fault is released.
	st := faultStates.get(delay, newFaultState)
	cctx, cancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { _, err := do(cctx, "x-slow", "1"); errc <- err }()
	waitFor(t, "delay active", func() bool { return st.active.Load() == 1 })
	cancel()
	<-errc
	waitFor(t, "delay released", func() bool { return st.active.Load() == 0 })

	// Rate limit: the first call passes (through the backend), the second
	// is limited with UNAVAILABLE.
	resp, err = do(ctx)
	if err != nil || grpcStatus(resp) != "0" {
		t.Fatalf("first call: %v %+v", err, resp)
	}
	resp, err = do(ctx)
	if err != nil || resp.StatusCode != 200 || grpcStatus(resp) != "14" || resp.Header.Get(HeaderResponseFlags) != "RL" {
		t.Fatalf("limited call: %v %+v", err, resp)
	}
}

func TestRateLimitResourceExhaustedH2(t *testing.T) {
	rl := &state.LocalRateLimit{Status: 429, Enabled: all, Enforced: all, RateLimitedAsResourceExhausted: true,
		Bucket: &state.TokenBucket{MaxTokens: 1, TokensPerFill: 1, FillInterval: time.Hour}}
	hcm := &state.HTTPConnectionManager{Codec: state.CodecHTTP2, Filters: []*state.HTTPFilter{{Name: "rl", LocalRateLimit: rl}}}
	// No backend: the first call fails upstream (no such cluster) and the
	// second is limited before routing would matter.
	e := newH2Env(t, h2EnvOpts{hcm: hcm, rc: routeAll("missing")})
	client, _ := h2cClient(t)
	var got []string
	for range 2 {
		req, _ := http.NewRequest("POST", "http://"+e.addr+"/svc/M", strings.NewReader(""))
		req.Header.Set("Content-Type", "application/grpc")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got = append(got, resp.Header.Get("Grpc-Status")+"/"+resp.Header.Get(HeaderResponseFlags))
	}
	if got[0] != "14/NC" || got[1] != "8/RL" {
		t.Fatalf("grpc-status/flags = %v, want [14/NC 8/RL]", got)
	}
}

// TestFaultActiveUntilRequestEnds: as in Envoy, a delayed request counts
// against max_active_faults until it ends, not only while the delay runs,
// on both codecs.
func TestFaultActiveUntilRequestEnds(t *testing.T) {
	release := make(chan struct{})
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release
		_, _ = io.WriteString(w, "ok")
	}))
	ff := &state.FaultFilter{Delay: &state.FaultDelay{Fixed: 10 * time.Millisecond, Percentage: all},
		MaxActiveFaults: 10, HasMaxActive: true}
	e := newProxyEnv(t, filterHCM(&state.HTTPFilter{Name: "fault", Fault: ff}), h1Cluster("be", be.hostport()))
	st := faultStates.get(ff, newFaultState)
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, _ := e.get(t, "/")
		if resp == nil || resp.StatusCode != 200 {
			t.Errorf("response %v", resp)
		}
	}()
	waitFor(t, "fault active", func() bool { return st.active.Load() == 1 })
	time.Sleep(100 * time.Millisecond) // well past the 10ms delay
	if n := st.active.Load(); n != 1 {
		t.Fatalf("active faults %d while the delayed request waits for its response, want 1", n)
	}
	close(release)
	<-done
	waitFor(t, "fault released", func() bool { return st.active.Load() == 0 })
}
