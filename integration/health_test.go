package integration

import (
	"fmt"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestHealthCheckMarksHostDownAndUp: an HTTP health check takes a host
// whose /healthz fails out of rotation and brings it back when it passes.
func TestHealthCheckMarksHostDownAndUp(t *testing.T) {
	b1, b2 := startKillable(t, "b1"), startKillable(t, "b2")
	c := edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false)
	step := durationpb.New(100 * time.Millisecond)
	c.HealthChecks = []*corev3.HealthCheck{{
		Timeout: durationpb.New(time.Second), Interval: step, NoTrafficInterval: step,
		UnhealthyThreshold: wrapperspb.UInt32(2), HealthyThreshold: wrapperspb.UInt32(2),
		HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{Path: "/healthz"}},
	}}
	m := startODMesh(t, c, routeTo("svc"), b1.addr, b2.addr)
	client := h1Client()
	counts := func() map[string]int {
		got := map[string]int{}
		for range 20 {
			code, be, _, err := get(client, m.url("/"), nil)
			if err != nil || code != 200 {
				got[fmt.Sprintf("error %d %v", code, err)]++
				continue
			}
			got[be]++
		}
		return got
	}
	waitFor := func(what string, ok func(map[string]int) bool) {
		t.Helper()
		eventually(t, 10*time.Second, func() error {
			if got := counts(); !ok(got) {
				return fmt.Errorf("%s: %v", what, got)
			}
			return nil
		})
	}
	waitFor("both hosts serve", func(g map[string]int) bool { return g["b1"] > 0 && g["b2"] > 0 })
	b2.healthy.Store(false)
	waitFor("b2 out", func(g map[string]int) bool { return g["b1"] == 20 })
	// Stable: a later batch still avoids b2 and sees no errors.
	time.Sleep(300 * time.Millisecond)
	if g := counts(); g["b1"] != 20 {
		t.Fatalf("with b2 failing its health check: %v", g)
	}
	b2.healthy.Store(true)
	waitFor("b2 back", func(g map[string]int) bool { return g["b1"] > 0 && g["b2"] > 0 && g["b1"]+g["b2"] == 20 })
}

// TestHealthCheckTCPMarksDeadHostDown: a TCP connect check takes a dead
// endpoint out before any request reaches it, and returns it when it
// listens again.
func TestHealthCheckTCPMarksDeadHostDown(t *testing.T) {
	b1, b2 := startKillable(t, "b1"), startKillable(t, "b2")
	c := edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false)
	step := durationpb.New(100 * time.Millisecond)
	c.HealthChecks = []*corev3.HealthCheck{{
		Timeout: durationpb.New(time.Second), Interval: step, NoTrafficInterval: step,
		UnhealthyThreshold: wrapperspb.UInt32(1), HealthyThreshold: wrapperspb.UInt32(1),
		HealthChecker: &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{}},
	}}
	m := startODMesh(t, c, routeTo("svc"), b1.addr, b2.addr)
	client := h1Client()
	b2.kill()
	// Once the check has seen b2 dead, no request fails.
	time.Sleep(500 * time.Millisecond)
	for i := range 50 {
		code, be, _, err := get(client, m.url("/"), nil)
		if err != nil || code != 200 || be != "b1" {
			t.Fatalf("request %d after b2 died: %d %q %v", i, code, be, err)
		}
	}
	b2.restart()
	eventually(t, 10*time.Second, func() error {
		for range 10 {
			if _, be, _, _ := get(client, m.url("/"), nil); be == "b2" {
				return nil
			}
		}
		return fmt.Errorf("b2 not back")
	})
}
