package xds

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds/workloadtest"
)

// waitAmbient polls the store until ok holds for its Ambient part.
func waitAmbient(t *testing.T, s *state.Store, what string, ok func(*state.Ambient) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if ok(s.Load().Ambient) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

// A ztunnel-type node subscribes, over delta even when SotW was asked,
// to exactly the two Workload API types, and keeps Snapshot.Ambient
// indexed through adds, removals and a rejected resource.
func TestWorkloadAPISubscription(t *testing.T) {
	cp, err := workloadtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	if err := cp.SetWorkloads(
		workloadtest.Workload("uid-a", "default", "a", "n1", "10.0.0.1", true),
		workloadtest.Workload("uid-b", "default", "b", "n2", "10.0.0.2", false),
	); err != nil {
		t.Fatal(err)
	}
	if err := cp.SetServices(workloadtest.Service("web", "default", "10.96.0.1", 80, 8080)); err != nil {
		t.Fatal(err)
	}
	if err := cp.SetPolicies(workloadtest.DenyPrincipal("deny-b", "default", "cluster.local/ns/default/sa/b")); err != nil {
		t.Fatal(err)
	}

	store := state.NewStore()
	c := New(Config{Address: cp.Addr, Node: Node{ID: "ztunnel~10.0.0.9~zt.istio-system~istio-system.svc.cluster.local"}, Store: store,
		Backoff: Backoff{Base: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()

	select {
	case <-c.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("not ready after the Workload API types arrived")
	}
	amb := store.Load().Ambient
	a := amb.WorkloadByAddr("", netip.MustParseAddr("10.0.0.1"))
	if a == nil || a.UID != "uid-a" || a.Tunnel != state.TunnelHBONE || a.Identity() != "spiffe://cluster.local/ns/default/sa/a" {
		t.Fatalf("workload a = %+v", a)
	}
	if s := amb.ServiceByVIP("", netip.MustParseAddr("10.96.0.1")); s == nil || s.Key() != "default/web.default.svc.cluster.local" {
		t.Fatalf("service = %+v", s)
	}
	if ps := amb.PoliciesFor(a); len(ps) != 1 || ps[0].Action != state.AuthzDeny {
		t.Fatalf("policies for a = %v", ps)
	}

	types := map[string]bool{}
	for _, r := range cp.DeltaRequests() {
		types[r.GetTypeUrl()] = true
	}
	if len(types) != 2 || !types[state.TypeAddress] || !types[state.TypeAuthorization] {
		t.Errorf("subscribed types = %v, want only the two Workload API types", types)
	}

	// A removal over delta drops the workload and its address index.
	if err := cp.RemoveAddresses("uid-b"); err != nil {
		t.Fatal(err)
	}
	waitAmbient(t, store, "uid-b removed", func(a *state.Ambient) bool {
		return a.Workload("uid-b") == nil && a.WorkloadByAddr("", netip.MustParseAddr("10.0.0.2")) == nil
	})

	// An invalid workload is NACKed; what was accepted stays.
	bad := workloadtest.Workload("uid-bad", "default", "x", "n1", "10.0.0.3", true)
	bad.Addresses = [][]byte{{1, 2, 3}}
	if err := cp.SetWorkloads(bad); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for c.Status().LastNACK == "" && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if nack := c.Status().LastNACK; !strings.Contains(nack, `workload "uid-bad": addresses[0]`) {
		t.Errorf("last NACK = %q", nack)
	}
	if store.Load().Ambient.Workload("uid-a") == nil {
		t.Error("accepted workload lost after a NACK")
	}
	nacked := false
	for _, r := range cp.DeltaRequests() {
		if r.GetErrorDetail() != nil && r.GetTypeUrl() == state.TypeAddress {
			nacked = true
		}
	}
	if !nacked {
		t.Error("server saw no NACK")
	}

	// Policy removal.
	if err := cp.RemovePolicies("default/deny-b"); err != nil {
		t.Fatal(err)
	}
	waitAmbient(t, store, "policy removed", func(a *state.Ambient) bool { return len(a.Policies) == 0 })
}

func TestWorkloadModes(t *testing.T) {
	cases := []struct {
		cfg             Config
		workloads, envy bool
	}{
		{Config{}, false, true},
		{Config{Workloads: true}, true, true},
		{Config{WorkloadsOnly: true}, true, false},
		{Config{Node: Node{ID: "ztunnel~1.2.3.4~a.b~b.svc.cluster.local"}}, true, false},
		{Config{Node: Node{ID: "sidecar~1.2.3.4~a.b~b.svc.cluster.local"}}, false, true},
	}
	for _, c := range cases {
		w, e := workloadMode(c.cfg)
		if w != c.workloads || e != c.envy {
			t.Errorf("%+v: workloads=%v envoy=%v", c.cfg, w, e)
		}
	}
	// Envoy types plus workloads: the list carries both, Envoy first.
	cl := New(Config{Workloads: true, Store: state.NewStore()})
	if n := len(cl.typeList); n != len(typeURLs)+2 || cl.typeList[n-2] != state.TypeAddress {
		t.Errorf("type list = %v", cl.typeList)
	}
}

// Readiness needs both types accepted once, even when no policy exists
// (the server answers the wildcard with an empty response).
func TestWorkloadAPIReadyWithoutPolicies(t *testing.T) {
	cp, err := workloadtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	defer cp.Stop()
	if err := cp.SetWorkloads(workloadtest.Workload("a", "default", "a", "n1", "10.0.0.1", true)); err != nil {
		t.Fatal(err)
	}
	store := state.NewStore()
	c := New(Config{Address: cp.Addr, WorkloadsOnly: true, Store: store})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-c.Ready():
	case <-time.After(5 * time.Second):
		t.Fatal("not ready with no policies")
	}
	if a := store.Load().Ambient; a.Workload("a") == nil || len(a.Policies) != 0 {
		t.Errorf("ambient = %+v", a)
	}
	if len(store.Load().Listeners) != 0 || store.Load().Versions[state.TypeListener] != "" {
		t.Error("Envoy types touched in Workload-only mode")
	}
}
