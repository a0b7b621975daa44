package xds

import (
	"testing"

	"github.com/meshlet/meshlet/state"
)

// TestUnchangedResourceKeepsValue: a push that resends a resource byte for
// byte keeps the decoded value the store already holds (same pointer), so
// the data plane keeps what it built from it; a changed resource gets a
// new value.
func TestUnchangedResourceKeepsValue(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cp := startControlPlane(t, "127.0.0.1:0")
			cp.set("1", resources(
				httpListener("l1", 8001, "r1"), tcpListener("l2", 8002, "c1"),
				edsCluster("c1"), routeConfig("r1", "a.example"), assignment("c1", 9001),
			))
			h := startClient(t, cp, m.delta, state.NewStore(), nil)
			waitReady(t, h.c)
			first := h.store.Load()

			// Version 2: l1 and the route are unchanged, l2 changes port.
			cp.set("2", resources(
				httpListener("l1", 8001, "r1"), tcpListener("l2", 8003, "c1"),
				edsCluster("c1"), routeConfig("r1", "a.example"), assignment("c1", 9001),
			))
			waitFor(t, "version 2 applied", func() bool {
				return h.store.Load().Versions[state.TypeListener] == "2"
			})
			second := h.store.Load()
			if second.Listeners["l1"] != first.Listeners["l1"] {
				t.Error("unchanged listener l1 was replaced by a new value")
			}
			if second.Routes["r1"] != first.Routes["r1"] {
				t.Error("unchanged route configuration r1 was replaced by a new value")
			}
			if second.Listeners["l2"] == first.Listeners["l2"] {
				t.Error("changed listener l2 kept its old value")
			}
		})
	}
}
