package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/dataplane/httpproxy"
	"github.com/meshlet/meshlet/internal/echo"
	"github.com/meshlet/meshlet/state"
)

// The traffic-policy steps' settings.
const (
	faultPercent  = 30 // the faulty service's 503 abort percentage
	numRetries    = 3  // retry_policy num_retries of the retry step
	faultDelay    = 200 * time.Millisecond
	routeTimeout  = 100 * time.Millisecond
	mirrorPercent = 50 // the mirror's runtime_fraction
	// timeoutRequests is the request count of each timeout measurement:
	// every request waits 100-200ms, so few requests tell the story.
	timeoutRequests = 40
)

// tolerance is how far a measured share of n requests may stray from an
// expected probability p before the demo fails: four standard deviations,
// at least 8 points, so a correct proxy fails about never.
func tolerance(p float64, n int) float64 {
	return max(0.08, 4*math.Sqrt(p*(1-p)/float64(n)))
}

// policyRequest returns a request func for the traffic-policy steps: GET
// path on the demo listener. An answer with a status in allowed is an
// outcome ("503", "504 UT": status and the proxy's response flags); any
// other answer or a transport error is a failed request.
func (d *demoRun) policyRequest(c *http.Client, path string, allowed ...int) func(context.Context) result {
	url := "http://" + d.addr + path
	return func(ctx context.Context) result {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return result{err: err}
		}
		req.Host = "echo.demo"
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return result{err: err}
		}
		_, _ = drain(resp)
		lat := time.Since(start)
		flags := resp.Header.Get(httpproxy.HeaderResponseFlags)
		if !slices.Contains(allowed, resp.StatusCode) {
			return result{err: fmt.Errorf("status %d (flags %s)", resp.StatusCode, flags)}
		}
		outcome := strconv.Itoa(resp.StatusCode)
		if flags != "" && flags != "-" {
			outcome += " " + flags
		}
		return result{
			version: resp.Header.Get(echo.HeaderVersion),
			latency: lat,
			outcome: outcome,
			attempt: resp.Header.Get(echo.HeaderAttemptCount),
		}
	}
}

// statusCount counts the answers with HTTP status code (any flags).
func statusCount(t *tally, code string) int {
	n := 0
	for o, c := range t.byOutcome {
		if strings.Fields(o)[0] == code {
			n += c
		}
	}
	return n
}

// answered is the number of requests that got an allowed answer.
func answered(t *tally) int { return t.total() - t.failed }

func shareOf(n, of int) float64 {
	if of == 0 {
		return 0
	}
	return float64(n) / float64(of)
}

// printOutcomes writes the outcome table: count, share of the answered
// requests, expected share of the status.
func printOutcomes(w io.Writer, t *tally, expected map[string]float64) {
	rows := make([]string, 0, len(t.byOutcome)+len(expected))
	for o := range t.byOutcome {
		rows = append(rows, o)
	}
	for code := range expected {
		if statusCount(t, code) == 0 {
			rows = append(rows, code)
		}
	}
	sort.Strings(rows)
	fmt.Fprintf(w, "    %-8s %7s %8s %9s\n", "status", "count", "share", "expected")
	for _, o := range rows {
		fmt.Fprintf(w, "    %-8s %7d %7.1f%% %8.1f%%\n", o, t.byOutcome[o],
			100*shareOf(t.byOutcome[o], answered(t)), 100*expected[strings.Fields(o)[0]])
	}
	if t.failed > 0 {
		fmt.Fprintf(w, "    %-8s %7d   (first error: %v)\n", "failed", t.failed, t.firstErr)
	}
}

// stepFault adds the faulty service, aborting 30% of its requests with
// 503, and shows the client seeing them through the demo listener.
func (d *demoRun) stepFault(ctx context.Context) (int, error) {
	n := d.requests / 2
	d.header("fault injection: a service answering 503 to %d%% of requests; %d requests to %s", faultPercent, n, faultyPrefix)
	d.say("    the faulty service is a second listener of this proxy: HTTP fault filter, then echo-v1")
	rs := d.resources()
	f := abortFault(503, faultPercent)
	if err := rs.addFaultyService(d.faultyPort, f); err != nil {
		return 0, err
	}
	what := fmt.Sprintf("listener %s on 127.0.0.1:%d (%s), cluster %s, route %s*", faultyName, d.faultyPort, faultString(f), faultyName, faultyPrefix)
	if err := d.push(ctx, rs, what, func(*state.Snapshot) bool { return d.proxy.listenerAddr(faultyName) != nil }); err != nil {
		return 0, err
	}
	c := newHTTPClient(false)
	defer c.CloseIdleConnections()
	t := runLoad(ctx, n, demoConcurrency, d.policyRequest(c, faultyPrefix+"hello", 200, 503))
	p := faultPercent / 100.0
	printOutcomes(d.out, t, map[string]float64{"200": 1 - p, "503": p})
	share := shareOf(statusCount(t, "503"), answered(t))
	d.say("    client saw 503 on %.1f%% of requests (expected %.1f%%)", 100*share, 100*p)
	if math.Abs(share-p) > tolerance(p, n) {
		return t.failed, fmt.Errorf("fault step: 503 on %.1f%% of requests, want %.1f%%", 100*share, 100*p)
	}
	return t.failed, nil
}

// stepRetry turns on retries on the demo route to the faulty service. The
// fault filter runs on the inner hop, so the outer route's retries see its
// 503s as upstream answers and retry them (a retry policy never retries a
// fault injected on its own hop, in Envoy as here).
func (d *demoRun) stepRetry(ctx context.Context) (int, error) {
	n := d.requests / 2
	d.header("retries: the route to the faulty service retries 5xx up to %d times; %d requests", numRetries, n)
	rs := d.resources()
	rt, err := rs.route(demoRouteConfig, faultyRoute)
	if err != nil {
		return 0, err
	}
	rt.GetRoute().RetryPolicy = &route.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(numRetries)}
	// The router tells each try its number in x-envoy-attempt-count; the
	// echo backend reports the one it got in x-echo-attempt-count.
	for _, vh := range rs.routeConfig(demoRouteConfig).GetVirtualHosts() {
		vh.IncludeRequestAttemptCount = true
	}
	what := fmt.Sprintf("route %s: retry_policy {retry_on: 5xx, num_retries: %d}, include_request_attempt_count", faultyRoute, numRetries)
	if err := d.push(ctx, rs, what, nil); err != nil {
		return 0, err
	}
	c := newHTTPClient(false)
	defer c.CloseIdleConnections()
	t := runLoad(ctx, n, demoConcurrency, d.policyRequest(c, faultyPrefix+"hello", 200, 503))

	// Try k succeeds with (1-p)·p^(k-1); all 1+numRetries fail with p^(1+numRetries).
	p := faultPercent / 100.0
	total := answered(t)
	fmt.Fprintf(d.out, "    %-22s %7s %8s %9s\n", "tries (echo-v1 saw)", "count", "share", "expected")
	retried := 0
	for k := 1; k <= 1+numRetries; k++ {
		got := t.byAttempt[strconv.Itoa(k)]
		if k > 1 {
			retried += got
		}
		fmt.Fprintf(d.out, "    %-22s %7d %7.1f%% %8.1f%%\n", fmt.Sprintf("200 after %d", k), got,
			100*shareOf(got, total), 100*(1-p)*math.Pow(p, float64(k-1)))
	}
	gaveUp := statusCount(t, "503")
	pGaveUp := math.Pow(p, 1+numRetries)
	fmt.Fprintf(d.out, "    %-22s %7d %7.1f%% %8.1f%%\n", fmt.Sprintf("503 after %d", 1+numRetries), gaveUp,
		100*shareOf(gaveUp, total), 100*pGaveUp)
	if t.failed > 0 {
		fmt.Fprintf(d.out, "    %-22s %7d   (first error: %v)\n", "failed", t.failed, t.firstErr)
	}
	d.say("    client saw 503 on %.1f%% of requests (expected %.1f%% = %d%% to the power %d); %.1f%% needed a retry",
		100*shareOf(gaveUp, total), 100*pGaveUp, faultPercent, 1+numRetries, 100*shareOf(retried, total))
	printLatency(d.out, t)
	// At most four standard deviations (and two requests) above p^4.
	limit := pGaveUp + 4*math.Sqrt(pGaveUp*(1-pGaveUp)/float64(n)) + 2/float64(n)
	if shareOf(gaveUp, total) > limit {
		return t.failed, fmt.Errorf("retry step: 503 on %.1f%% of requests, want at most %.1f%%", 100*shareOf(gaveUp, total), 100*limit)
	}
	if want := p - pGaveUp; math.Abs(shareOf(retried, total)-want) > tolerance(want, n) {
		return t.failed, fmt.Errorf("retry step: %.1f%% of requests were retried, want %.1f%%", 100*shareOf(retried, total), 100*want)
	}
	return t.failed, nil
}

// stepTimeout makes the faulty service delay every request by 200ms and
// shows a 100ms route timeout turning that into 504 UT, then the 200ms
// latency once the timeout is off.
func (d *demoRun) stepTimeout(ctx context.Context) (int, error) {
	n := timeoutRequests
	d.header("delay fault and route timeout: the faulty service delays every request %v; %d requests each", faultDelay, n)
	rs := d.resources()
	rs.setFault(delayFault(faultDelay, 100))
	rt, err := rs.route(demoRouteConfig, faultyRoute)
	if err != nil {
		return 0, err
	}
	// Without retries: a route timeout is never retried anyway, but the
	// step shows one thing at a time.
	rt.GetRoute().RetryPolicy = nil
	rt.GetRoute().Timeout = durationpb.New(routeTimeout)
	what := fmt.Sprintf("%s: %s; route %s: timeout %v, no retries", faultyName, faultString(delayFault(faultDelay, 100)), faultyRoute, routeTimeout)
	if err := d.push(ctx, rs, what, nil); err != nil {
		return 0, err
	}
	c := newHTTPClient(false)
	defer c.CloseIdleConnections()
	t := runLoad(ctx, n, demoConcurrency, d.policyRequest(c, faultyPrefix+"hello", 504))
	printOutcomes(d.out, t, map[string]float64{"504": 1})
	printLatency(d.out, t)
	failed := t.failed
	ut := t.byOutcome["504 UT"]
	d.say("    with the %v timeout: 504 UT on %d of %d requests", routeTimeout, ut, n)
	if ut != n {
		return failed, fmt.Errorf("timeout step: 504 UT on %d of %d requests, want all", ut, n)
	}

	rs = d.resources()
	if rt, err = rs.route(demoRouteConfig, faultyRoute); err != nil {
		return failed, err
	}
	rt.GetRoute().Timeout = durationpb.New(0)
	if err := d.push(ctx, rs, fmt.Sprintf("route %s: timeout 0s (none)", faultyRoute), nil); err != nil {
		return failed, err
	}
	t = runLoad(ctx, n, demoConcurrency, d.policyRequest(c, faultyPrefix+"hello", 200))
	failed += t.failed
	printOutcomes(d.out, t, map[string]float64{"200": 1})
	printLatency(d.out, t)
	fastest := t.percentile(0)
	d.say("    without the timeout: 200 on %d of %d requests, latency p50 %s (delay %v)",
		statusCount(t, "200"), n, roundLatency(t.percentile(0.5)), faultDelay)
	if statusCount(t, "200") > 0 && fastest < faultDelay {
		return failed, fmt.Errorf("timeout step: a request took %v, less than the %v delay", fastest, faultDelay)
	}
	return failed, nil
}

// stepMirror adds a third echo service and mirrors half of the default
// route's requests to it.
func (d *demoRun) stepMirror(ctx context.Context) (int, error) {
	n := d.requests / 2
	d.header("mirroring: the default route copies %d%% of its requests to %s; %d requests", mirrorPercent, mirrorCluster, n)
	rs := d.resources()
	rs.put(resource.ClusterType, edsCluster(mirrorCluster))
	rs.put(resource.EndpointType, loopbackEndpoints(mirrorCluster, d.mirror.HTTPAddr.Port))
	rt, err := rs.route(demoRouteConfig, demoRouteDefault)
	if err != nil {
		return 0, err
	}
	rt.GetRoute().RequestMirrorPolicies = []*route.RouteAction_RequestMirrorPolicy{{
		Cluster:         mirrorCluster,
		RuntimeFraction: &core.RuntimeFractionalPercent{DefaultValue: percentOf(mirrorPercent)},
	}}
	what := fmt.Sprintf("cluster %s -> %s, route %s: request_mirror_policies {cluster: %s, runtime_fraction: %d%%}",
		mirrorCluster, d.mirror.HTTPAddr, demoRouteDefault, mirrorCluster, mirrorPercent)
	hasEndpoints := func(s *state.Snapshot) bool { return s.Endpoints[mirrorCluster] != nil }
	if err := d.push(ctx, rs, what, hasEndpoints); err != nil {
		return 0, err
	}
	d.mirror.ResetStats()
	c := newHTTPClient(false)
	defer c.CloseIdleConnections()
	t := runLoad(ctx, n, demoConcurrency, d.httpRequest(c, nil))
	printSplit(d.out, t, d.expected(demoRouteDefault))
	if t.byVersion[d.mirror.Version] > 0 {
		return t.failed, fmt.Errorf("mirror step: the mirror answered %d client requests; mirrors are fire-and-forget", t.byVersion[d.mirror.Version])
	}

	st := d.waitMirrored(ctx)
	p := mirrorPercent / 100.0
	share := shareOf(st.Requests, n)
	shadowHost := "echo.demo-shadow"
	d.say("    %s received %d of %d requests (%.1f%%, expected %.1f%%), %d with host %s",
		mirrorCluster, st.Requests, n, 100*share, 100*p, st.Hosts[shadowHost], shadowHost)
	if math.Abs(share-p) > tolerance(p, n) {
		return t.failed, fmt.Errorf("mirror step: %s received %.1f%% of the requests, want %.1f%%", mirrorCluster, 100*share, 100*p)
	}
	if st.Hosts[shadowHost] != st.Requests {
		return t.failed, fmt.Errorf("mirror step: hosts seen by %s: %v, want only %s", mirrorCluster, st.Hosts, shadowHost)
	}
	return t.failed, nil
}

// waitMirrored waits for the mirror's count to settle: mirrors are fire
// and forget, so the last copies may still be on their way when the
// primary answers are in.
func (d *demoRun) waitMirrored(ctx context.Context) echo.Stats {
	const quiet = 200 * time.Millisecond
	deadline := time.Now().Add(3 * time.Second)
	last, since := -1, time.Now()
	for time.Now().Before(deadline) && ctx.Err() == nil {
		st := d.mirror.Stats()
		if st.Requests != last {
			last, since = st.Requests, time.Now()
		} else if time.Since(since) >= quiet {
			return st
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d.mirror.Stats()
}
