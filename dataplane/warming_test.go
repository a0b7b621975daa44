package dataplane

import (
	"testing"

	"github.com/meshlet/meshlet/state"
)

// TestListenerWarming: like Envoy, a listener whose HTTP chain takes its
// routes over RDS is not bound until that route configuration exists, and
// a changed listener keeps its old config until the new routes arrive.
func TestListenerWarming(t *testing.T) {
	e := newEnv(t, Options{})
	rdsChain := func(rds string) *state.FilterChain {
		return &state.FilterChain{Name: "http", HTTP: &state.HTTPConnectionManager{RDSName: rds}}
	}
	e.listener(&state.Listener{Name: "web", Address: loopback0(), BindToPort: true,
		FilterChains: []*state.FilterChain{rdsChain("routes-a")}})
	if a := e.srv.Addr("web"); a != nil {
		t.Fatalf("listener bound at %v before its RDS routes arrived", a)
	}
	e.store.Update(func(n *state.Snapshot) bool {
		n.Routes["routes-a"] = &state.RouteConfig{Name: "routes-a"}
		return true
	})
	e.addr("web") // bound now
	before := e.srv.live["web"].cfg.Load()

	// An update naming routes that do not exist yet keeps the old config.
	e.listener(&state.Listener{Name: "web", Address: loopback0(), BindToPort: true,
		FilterChains: []*state.FilterChain{rdsChain("routes-b")}})
	if e.srv.live["web"].cfg.Load() != before {
		t.Fatal("listener switched to a config whose routes have not arrived")
	}
	e.store.Update(func(n *state.Snapshot) bool {
		n.Routes["routes-b"] = &state.RouteConfig{Name: "routes-b"}
		return true
	})
	if e.srv.live["web"].cfg.Load() == before {
		t.Fatal("listener did not take the new config once its routes arrived")
	}
}
