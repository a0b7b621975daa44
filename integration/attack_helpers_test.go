package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// Helpers of attack_test.go: a recording upstream, a proxy whose HCM the
// test edits, and the proxy's goroutine count and RSS. The raw HTTP/2
// client is internal/h2raw.

// recordingUpstream counts requests, the most in flight at once, and the
// paths it saw. Requests are held for hold or until cancelled.
type recordingUpstream struct {
	addr                 string
	hits, inflight, peak atomic.Int64
	hold                 time.Duration
	mu                   sync.Mutex
	paths                []string
}

func startRecorder(t *testing.T, name string, hold time.Duration) *recordingUpstream {
	t.Helper()
	u := &recordingUpstream{hold: hold}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u.addr = lis.Addr().String()
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		n := u.inflight.Add(1)
		defer u.inflight.Add(-1)
		for p := u.peak.Load(); n > p && !u.peak.CompareAndSwap(p, n); p = u.peak.Load() {
		}
		u.mu.Lock()
		u.paths = append(u.paths, r.URL.RequestURI())
		u.mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		if u.hold > 0 {
			select {
			case <-time.After(u.hold):
			case <-r.Context().Done():
			}
		}
		w.Header().Set("x-backend", name)
		fmt.Fprintf(w, "%s host=%s body=%d", name, r.Host, len(body))
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return u
}

func (u *recordingUpstream) sawPath(p string) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, x := range u.paths {
		if strings.Contains(x, p) {
			return true
		}
	}
	return false
}

// attackMesh is a proxy with one HTTP listener; hcmEdit adjusts the HCM,
// vhosts route to clusters named after the recorders.
type attackMesh struct {
	listener string
	px       *proxy
}

func startAttackMesh(t *testing.T, hcmEdit func(*hcmv3.HttpConnectionManager), vhosts []*routev3.VirtualHost, ups map[string]*recordingUpstream) *attackMesh {
	t.Helper()
	cp := startControlPlane(t)
	m := &attackMesh{listener: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "attack",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: "attack",
			ConfigSource: &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})},
		}},
	}
	if hcmEdit != nil {
		hcmEdit(hcm)
	}
	res := []types.Resource{
		listenerOn(t, "attack", m.listener, &listenerv3.Filter{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)},
		}),
		&routev3.RouteConfiguration{Name: "attack", VirtualHosts: vhosts},
	}
	for name, u := range ups {
		res = append(res, edsCluster(name, clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, name, u.addr))
	}
	cp.set(res...)
	m.px = startProxy(t, cp, proxyOpts{})
	eventually(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", m.listener)
		if err != nil {
			return err
		}
		c.Close()
		return nil
	})
	// Wait for routes and endpoints too.
	eventually(t, 10*time.Second, func() error {
		resp, err := h1Client().Get("http://" + m.listener + "/warmup")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
	return m
}

var goroutineTotal = regexp.MustCompile(`goroutine profile: total (\d+)`)

// goroutines reads the proxy's goroutine count from admin pprof.
func (p *proxy) goroutines(t *testing.T) int {
	t.Helper()
	resp, err := http.Get("http://" + p.admin + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := goroutineTotal.FindSubmatch(b)
	if m == nil {
		t.Fatalf("no goroutine total in pprof output (status %d)", resp.StatusCode)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// rssKB reads the proxy's resident set size.
func (p *proxy) rssKB(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	t.Fatal("no VmRSS")
	return 0
}
