package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/meshlet/meshlet/internal/echo"
)

// Names in examples/demo/routes.yaml.
const (
	demoRouteConfig  = "demo"
	demoRouteDefault = "default"
	demoRouteGRPC    = "grpc"
	demoRouteCanary  = "canary"
	demoConcurrency  = 8
	// splitTolerance is how far (absolute share) a measured split may stray
	// from the configured one before the demo calls it out. With 1000
	// requests one standard deviation at 80/20 is 1.3 points.
	splitTolerance = 0.07
)

func newHTTPClient(h2c bool) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: demoConcurrency, DisableCompression: true}
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		tr.Protocols = &p
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

// httpRequest returns a request func counting the answering version.
func (d *demoRun) httpRequest(c *http.Client, header map[string]string) func(context.Context) result {
	url := "http://" + d.addr + "/hello"
	return func(ctx context.Context) result {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return result{err: err}
		}
		req.Host = "echo.demo"
		for k, v := range header {
			req.Header.Set(k, v)
		}
		start := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return result{err: err}
		}
		_, _ = drain(resp)
		lat := time.Since(start)
		if resp.StatusCode != http.StatusOK {
			return result{err: fmt.Errorf("status %d (flags %s)", resp.StatusCode, resp.Header.Get("x-meshlet-response-flags"))}
		}
		v := resp.Header.Get(echo.HeaderVersion)
		if v == "" {
			return result{err: fmt.Errorf("response without %s", echo.HeaderVersion)}
		}
		return result{version: v, latency: lat}
	}
}

func (d *demoRun) stepHTTP1(ctx context.Context) (int, error) {
	d.header("HTTP/1.1: %d requests, concurrency %d, default route", d.requests, demoConcurrency)
	c := newHTTPClient(false)
	defer c.CloseIdleConnections()
	t := runLoad(ctx, d.requests, demoConcurrency, d.httpRequest(c, nil))
	exp := d.expected(demoRouteDefault)
	printSplit(d.out, t, exp)
	printLatency(d.out, t)
	d.checkSplit(t, exp)
	return t.failed, nil
}

func (d *demoRun) stepH2C(ctx context.Context) (int, error) {
	n := d.requests / 5
	d.header("h2c (HTTP/2 cleartext, prior knowledge): %d requests on one connection", n)
	c := newHTTPClient(true)
	defer c.CloseIdleConnections()
	t := runLoad(ctx, n, demoConcurrency, d.httpRequest(c, nil))
	printSplit(d.out, t, d.expected(demoRouteDefault))
	printLatency(d.out, t)
	return t.failed, nil
}

func (d *demoRun) stepGRPC(ctx context.Context) (int, error) {
	n := d.requests / 5
	d.header("gRPC grpc.health.v1.Health/Check: %d calls", n)
	conn, err := grpc.NewClient(d.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	t := runLoad(ctx, n, demoConcurrency, func(ctx context.Context) result {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		var md metadata.MD
		start := time.Now()
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
		if err != nil {
			return result{err: err}
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return result{err: fmt.Errorf("health status %v, want SERVING", resp.GetStatus())}
		}
		v := md.Get(echo.HeaderVersion)
		if len(v) == 0 {
			return result{err: fmt.Errorf("response without %s metadata", echo.HeaderVersion)}
		}
		return result{version: v[0], latency: time.Since(start)}
	})
	printSplit(d.out, t, d.expected(demoRouteGRPC))
	printLatency(d.out, t)
	return t.failed, nil
}

func (d *demoRun) stepCanary(ctx context.Context) (int, error) {
	n := d.requests / 10
	d.header("header route: x-canary: true, %d requests", n)
	c := newHTTPClient(false)
	defer c.CloseIdleConnections()
	t := runLoad(ctx, n, demoConcurrency, d.httpRequest(c, map[string]string{"x-canary": "true"}))
	exp := d.expected(demoRouteCanary)
	printSplit(d.out, t, exp)
	for v, want := range exp {
		if want == 1 && t.byVersion[v] != n-t.failed {
			return t.failed, fmt.Errorf("x-canary route: %d of %d requests reached %s, want all", t.byVersion[v], n, v)
		}
	}
	return t.failed, nil
}

// stepShift pushes 50/50 weights for the default route while background
// load runs, waits until the traffic shows the new split, then measures it.
func (d *demoRun) stepShift(ctx context.Context) (int, error) {
	d.header("live weight shift of the default route to 50/50 under load")
	c := newHTTPClient(false)
	defer c.CloseIdleConnections()
	do := d.httpRequest(c, nil)

	bgCtx, stopBG := context.WithCancel(ctx)
	var bgMu sync.Mutex
	bg := &tally{}
	var wg sync.WaitGroup
	for range demoConcurrency / 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for bgCtx.Err() == nil {
				r := do(bgCtx)
				if bgCtx.Err() != nil && r.err != nil {
					return // cancelled by us, not a failure
				}
				bgMu.Lock()
				bg.add(r)
				bgMu.Unlock()
			}
		}()
	}
	stop := func() {
		stopBG()
		wg.Wait()
	}

	time.Sleep(200 * time.Millisecond) // let the background load get going
	pushed := time.Now()
	if err := d.pushWeights(demoRouteDefault, 50); err != nil {
		stop()
		return 0, err
	}
	d.say("    pushed snapshot version %s to the control plane", d.cp.Version())

	// Observe: windows of 200 requests until v2's share is near 50%.
	failed := 0
	observed := false
	for !observed && time.Since(pushed) < 10*time.Second && ctx.Err() == nil {
		w := runLoad(ctx, 200, demoConcurrency, do)
		failed += w.failed
		observed = math.Abs(w.share("v2")-0.5) < 0.1
	}
	if !observed {
		stop()
		return failed, fmt.Errorf("the 50/50 split was not observed within 10s of the push")
	}
	d.say("    new split observed %v after the push", time.Since(pushed).Round(time.Millisecond))

	t := runLoad(ctx, d.requests, demoConcurrency, do)
	stop()
	failed += t.failed
	exp := d.expected(demoRouteDefault)
	printSplit(d.out, t, exp)
	printLatency(d.out, t)
	d.checkSplit(t, exp)
	d.say("    background load during the shift: %d requests, %d failed", bg.total(), bg.failed)
	if bg.failed > 0 {
		d.say("    background first error: %v", bg.firstErr)
	}
	return failed + bg.failed, nil
}

func (d *demoRun) checkSplit(t *tally, exp map[string]float64) {
	for v, want := range exp {
		if math.Abs(t.share(v)-want) > splitTolerance {
			d.say("    note: %s got %.1f%%, configured %.1f%%", v, 100*t.share(v), 100*want)
		}
	}
}

// demoRoute returns the named route of the demo route configuration in the
// control plane's current resources.
func (d *demoRun) demoRoute(res map[string][]types.Resource, name string) *route.Route {
	for _, r := range res[resource.RouteType] {
		rc, ok := r.(*route.RouteConfiguration)
		if !ok || rc.GetName() != demoRouteConfig {
			continue
		}
		for _, vh := range rc.GetVirtualHosts() {
			for _, rt := range vh.GetRoutes() {
				if rt.GetName() == name {
					return rt
				}
			}
		}
	}
	return nil
}

// expected returns the configured share per backend version of a route:
// cluster "echo-v1" or "grpc-v1" counts for version "v1".
func (d *demoRun) expected(routeName string) map[string]float64 {
	out := map[string]float64{}
	rt := d.demoRoute(d.cp.Resources(), routeName)
	if rt == nil {
		return out
	}
	ra := rt.GetRoute()
	if c := ra.GetCluster(); c != "" {
		out[versionOf(c)] = 1
		return out
	}
	var total float64
	for _, wc := range ra.GetWeightedClusters().GetClusters() {
		total += float64(wc.GetWeight().GetValue())
	}
	for _, wc := range ra.GetWeightedClusters().GetClusters() {
		if total > 0 {
			out[versionOf(wc.GetName())] += float64(wc.GetWeight().GetValue()) / total
		}
	}
	return out
}

func versionOf(cluster string) string {
	return cluster[strings.LastIndex(cluster, "-")+1:]
}

// pushWeights sets every weighted cluster of the named route to weight and
// pushes the resulting resource set as a new snapshot.
func (d *demoRun) pushWeights(routeName string, weight uint32) error {
	res := d.cp.Resources()
	var all []types.Resource
	found := false
	for typ, list := range res {
		for _, r := range list {
			if rc, ok := r.(*route.RouteConfiguration); ok && typ == resource.RouteType && rc.GetName() == demoRouteConfig {
				rc = proto.Clone(rc).(*route.RouteConfiguration)
				for _, vh := range rc.GetVirtualHosts() {
					for _, rt := range vh.GetRoutes() {
						if rt.GetName() != routeName {
							continue
						}
						for _, wc := range rt.GetRoute().GetWeightedClusters().GetClusters() {
							wc.Weight.Value = weight
							found = true
						}
					}
				}
				r = rc
			}
			all = append(all, r)
		}
	}
	if !found {
		return fmt.Errorf("route %q with weighted clusters not found in route configuration %q", routeName, demoRouteConfig)
	}
	return d.cp.SetResources(all...)
}
