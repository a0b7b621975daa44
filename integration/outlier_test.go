package integration

import (
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// killable is an HTTP backend that can be killed (listener and
// connections closed: clients see refused connections) and restarted on
// the same address, and whose /healthz can be failed.
type killable struct {
	t       *testing.T
	name    string
	addr    string
	hits    atomic.Int64
	healthy atomic.Bool
	mu      sync.Mutex
	srv     *http.Server
}

func startKillable(t *testing.T, name string) *killable {
	t.Helper()
	k := &killable{t: t, name: name}
	k.healthy.Store(true)
	k.start("127.0.0.1:0")
	t.Cleanup(k.kill)
	return k
}

func (k *killable) start(addr string) {
	k.t.Helper()
	var lis net.Listener
	var err error
	// The port was just freed by kill; a few tries cover TIME_WAIT races.
	for i := 0; i < 50; i++ {
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		k.t.Fatal(err)
	}
	k.addr = lis.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if !k.healthy.Load() {
				w.WriteHeader(503)
			}
			return
		}
		k.hits.Add(1)
		w.Header().Set("x-backend", k.name)
		// The attempt count shows whether the proxy had to retry.
		fmt.Fprintf(w, "%s attempt=%s", k.name, r.Header.Get("x-envoy-attempt-count"))
	})}
	k.mu.Lock()
	k.srv = srv
	k.mu.Unlock()
	go func() { _ = srv.Serve(lis) }()
}

func (k *killable) kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.srv != nil {
		k.srv.Close()
		k.srv = nil
	}
}

func (k *killable) restart() { k.start(k.addr) }

// odMesh is a control plane and a proxy with one HTTP listener routing
// everything to cluster "svc", whose endpoints are the given backends.
type odMesh struct {
	t        *testing.T
	cp       *controlPlane
	listener string
	cluster  *clusterv3.Cluster
	route    *routev3.Route
	addrs    []string
}

func startODMesh(t *testing.T, cluster *clusterv3.Cluster, route *routev3.Route, addrs ...string) *odMesh {
	t.Helper()
	m := &odMesh{t: t, cp: startControlPlane(t), cluster: cluster, route: route, addrs: addrs}
	m.listener = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	m.cp.set(m.resources()...)
	startProxy(t, m.cp, proxyOpts{})
	c := h1Client()
	eventually(t, 10*time.Second, func() error {
		code, be, _, err := get(c, m.url("/"), nil)
		if err != nil {
			return err
		}
		if be == "" {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})
	return m
}

func (m *odMesh) resources() []types.Resource {
	rc := routeConfig("local", m.route)
	rc.VirtualHosts[0].IncludeRequestAttemptCount = true
	return []types.Resource{
		httpListener(m.t, "http", m.listener, "local"),
		rc,
		m.cluster,
		endpoints(m.t, m.cluster.Name, m.addrs...),
	}
}

func (m *odMesh) url(path string) string { return "http://" + m.listener + path }

// load sends requests from workers until stop is closed, recording each
// odOutcome with its time.
type odOutcome struct {
	at      time.Time
	backend string
	body    string
	err     string // "" on a 200 from a backend
}

func odLoad(c *http.Client, url string, workers int, stop chan struct{}) func() []odOutcome {
	var mu sync.Mutex
	var out []odOutcome
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				code, be, body, err := get(c, url, nil)
				o := odOutcome{at: time.Now(), backend: be, body: body}
				switch {
				case err != nil:
					o.err = err.Error()
				case code != 200:
					o.err = fmt.Sprintf("%d %s", code, strings.TrimSpace(body))
				}
				mu.Lock()
				out = append(out, o)
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return func() []odOutcome { wg.Wait(); return out }
}

func outlierCluster(name string, base time.Duration) *clusterv3.Cluster {
	c := edsCluster(name, clusterv3.Cluster_ROUND_ROBIN, false)
	c.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx:    wrapperspb.UInt32(3),
		Interval:           durationpb.New(100 * time.Millisecond),
		BaseEjectionTime:   durationpb.New(base),
		MaxEjectionPercent: wrapperspb.UInt32(50),
	}
	return c
}

// TestOutlierEjectsKilledBackend: a backend killed mid-load is ejected
// after consecutive_5xx failures; from then on the client sees no errors
// and the dead host no traffic; restarted, it returns after
// base_ejection_time.
func TestOutlierEjectsKilledBackend(t *testing.T) {
	b1, b2, b3 := startKillable(t, "b1"), startKillable(t, "b2"), startKillable(t, "b3")
	base := 1500 * time.Millisecond
	m := startODMesh(t, outlierCluster("svc", base), routeTo("svc"), b1.addr, b2.addr, b3.addr)
	c := h1Client()
	stop := make(chan struct{})
	wait := odLoad(c, m.url("/"), 4, stop)
	time.Sleep(300 * time.Millisecond)
	killedAt := time.Now()
	b3.kill()
	time.Sleep(800 * time.Millisecond) // well under base_ejection_time
	close(stop)
	res := wait()
	var before, after, errs, lateErrs, lateB3 int
	var lastErr time.Time
	for _, o := range res {
		if o.at.Before(killedAt) {
			before++
			if o.err != "" {
				t.Errorf("error before the kill: %s", o.err)
			}
			continue
		}
		after++
		if o.err != "" {
			errs++
			lastErr = o.at
		}
		if o.at.After(killedAt.Add(300 * time.Millisecond)) {
			if o.err != "" {
				lateErrs++
			}
			if o.backend == "b3" {
				lateB3++
			}
		}
	}
	t.Logf("requests: %d before the kill, %d after; %d errors after, last %v after the kill", before, after, errs, lastErr.Sub(killedAt))
	// Each of the 4 workers may have had one request in flight to b3 when
	// its connections closed, plus 3 consecutive failures to eject.
	if errs > 3+4 {
		t.Errorf("%d errors after the kill, want at most 7 (3 to eject + in flight)", errs)
	}
	if after < 100 || lateErrs > 0 || lateB3 > 0 {
		t.Errorf("after ejection: %d requests, %d errors, %d to the dead host; want >= 100, 0, 0", after, lateErrs, lateB3)
	}
	// Restart b3: it comes back once base_ejection_time has passed.
	b3.restart()
	hitsBefore := b3.hits.Load()
	eventually(t, base+5*time.Second, func() error {
		for range 9 {
			if code, _, _, err := get(c, m.url("/"), nil); err != nil || code != 200 {
				return fmt.Errorf("status %d err %v", code, err)
			}
		}
		if b3.hits.Load() == hitsBefore {
			return fmt.Errorf("b3 still gets no traffic")
		}
		return nil
	})
	if back := time.Since(killedAt); back < base {
		t.Errorf("b3 returned %v after its ejection, before base_ejection_time %v", back, base)
	}
}

// TestOutlierWithRetriesNoErrors: with a retry policy on connect failures
// and 5xx that prefers other hosts, killing a backend mid-load costs the
// client nothing, and once outlier detection has taken the host out no
// request needs a retry any more.
func TestOutlierWithRetriesNoErrors(t *testing.T) {
	b1, b2, b3 := startKillable(t, "b1"), startKillable(t, "b2"), startKillable(t, "b3")
	route := routeTo("svc")
	route.GetRoute().RetryPolicy = &routev3.RetryPolicy{
		RetryOn:    "connect-failure,reset,5xx",
		NumRetries: wrapperspb.UInt32(3),
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
			Name: "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{
				TypedConfig: anyOf(t, &previoushostsv3.PreviousHostsPredicate{}),
			},
		}},
		HostSelectionRetryMaxAttempts: 5,
	}
	m := startODMesh(t, outlierCluster("svc", 30*time.Second), route, b1.addr, b2.addr, b3.addr)
	c := h1Client()
	stop := make(chan struct{})
	wait := odLoad(c, m.url("/"), 4, stop)
	time.Sleep(300 * time.Millisecond)
	killedAt := time.Now()
	b3.kill()
	time.Sleep(700 * time.Millisecond)
	close(stop)
	var after, errs, retried, lateRetried int
	for _, o := range wait() {
		if o.err != "" {
			errs++
			t.Logf("client error: %s", o.err)
		}
		if o.at.After(killedAt) {
			after++
		}
		if !strings.HasSuffix(o.body, "attempt=1") {
			retried++
			if o.at.After(killedAt.Add(300 * time.Millisecond)) {
				lateRetried++
			}
		}
	}
	t.Logf("after the kill: %d requests, %d retried (%d late)", after, retried, lateRetried)
	if errs > 0 || after < 100 || retried == 0 || lateRetried > 0 {
		t.Fatalf("after the kill: %d requests, %d client errors, %d retried, %d retried after ejection; want >= 100, 0, > 0, 0",
			after, errs, retried, lateRetried)
	}
}
