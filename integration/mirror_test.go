package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// Mirrors get copies with "-shadow" appended to the host, and a slow
// mirror never slows the primary.
func TestMirrorShadowHostAndFireAndForget(t *testing.T) {
	var mu sync.Mutex
	var hosts []string
	var bodies []string
	shadow := startFnBackend(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hosts = append(hosts, r.Host)
		mu.Unlock()
		time.Sleep(time.Second) // a slow shadow
	})
	primary := startFnBackend(t, func(_ int64, w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "primary") })
	_ = bodies
	vh := vhost(catchAll("primary", func(a *routev3.RouteAction) {
		a.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{Cluster: "shadow"}}
	}))
	m := startPolicyMesh(t, vh, clusterv3.Cluster_ROUND_ROBIN, map[string][]string{"primary": {primary.addr}, "shadow": {shadow.addr}})
	for _, tc := range []struct {
		name string
		c    *http.Client
	}{{"http1", h1Client()}, {"h2c", h2cClient()}} {
		t.Run(tc.name, func(t *testing.T) {
			before := shadow.hits.Load()
			start := time.Now()
			for range 5 {
				req, _ := http.NewRequest("POST", m.url("/m"), strings.NewReader("payload"))
				req.Host = "svc.example:8080"
				resp, err := tc.c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "primary" {
					t.Fatalf("primary answered %d %q", resp.StatusCode, b)
				}
			}
			if took := time.Since(start); took > 900*time.Millisecond {
				t.Errorf("5 requests took %v: the primary waited for the 1s mirror", took)
			}
			eventually(t, 5*time.Second, func() error {
				if got := shadow.hits.Load() - before; got != 5 {
					return fmt.Errorf("shadow got %d copies, want 5", got)
				}
				return nil
			})
			mu.Lock()
			defer mu.Unlock()
			for _, h := range hosts {
				if h != "svc.example-shadow:8080" {
					t.Errorf("shadow saw host %q, want svc.example-shadow:8080", h)
				}
			}
		})
	}
}

// runtime_fraction samples mirrored requests.
func TestMirrorFraction(t *testing.T) {
	shadow := startFnBackend(t, func(int64, http.ResponseWriter, *http.Request) {})
	primary := startFnBackend(t, func(_ int64, w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	vh := vhost(catchAll("primary", func(a *routev3.RouteAction) {
		a.RequestMirrorPolicies = []*routev3.RouteAction_RequestMirrorPolicy{{
			Cluster: "shadow",
			RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: &typev3.FractionalPercent{
				Numerator: 30, Denominator: typev3.FractionalPercent_HUNDRED,
			}},
			DisableShadowHostSuffixAppend: true,
		}}
	}))
	m := startPolicyMesh(t, vh, clusterv3.Cluster_ROUND_ROBIN, map[string][]string{"primary": {primary.addr}, "shadow": {shadow.addr}})
	const n = 400
	res := runLoad(t, h1Client(), m.url("/"), n, 4)
	if res.status[200] != n {
		t.Fatalf("statuses %v", res.status)
	}
	time.Sleep(300 * time.Millisecond)
	within(t, "mirrored", int(shadow.hits.Load()), n, 0.3)
}
