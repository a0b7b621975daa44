package lb

import (
	"testing"

	"github.com/meshlet/meshlet/state"
)

// TestProxyHealthFlags: ejected or health-check-failed hosts leave the
// picker at the next Rebuild and come back when cleared; when too few
// hosts are left the level panics and uses all of them, as in Envoy.
func TestProxyHealthFlags(t *testing.T) {
	eps := hosts("10.0.0.1", 4, state.HealthHealthy)
	for _, policy := range []state.LBPolicy{state.LBRoundRobin, state.LBLeastRequest, state.LBRandom, state.LBRingHash, state.LBMaglev} {
		t.Run(policy.String(), func(t *testing.T) {
			b := newBalancer(&state.Cluster{LBPolicy: policy, MaglevTableSize: 65537}, assignment(locality("a", 0, 0, eps)))
			byAddr := map[string]*Host{}
			for _, h := range b.Hosts() {
				byAddr[h.Address] = h
			}
			h0, h1 := byAddr[eps[0].addr], byAddr[eps[1].addr]
			if !h0.SetEjected(true) || h0.SetEjected(true) {
				t.Fatal("SetEjected must report a change exactly once")
			}
			b.Rebuild()
			checkShares(t, sharesOf(t, b, 3000, nil), even(1, eps[1:]), 0.08)
			h1.SetHealthCheckFailed(true)
			b.Rebuild()
			checkShares(t, sharesOf(t, b, 3000, nil), even(1, eps[2:]), 0.08)
			// Only 2 of 4 healthy: 50% x 1.4 overprovisioning is no panic.
			// A third failure (25% x 1.4 = 35% < 50%) panics: all hosts again.
			byAddr[eps[2].addr].SetEjected(true)
			b.Rebuild()
			checkShares(t, sharesOf(t, b, 4000, nil), even(1, eps), 0.08)
			byAddr[eps[2].addr].SetEjected(false)
			h0.SetEjected(false)
			h1.SetHealthCheckFailed(false)
			b.Rebuild()
			checkShares(t, sharesOf(t, b, 4000, nil), even(1, eps), 0.08)
		})
	}
}

// TestDrainingStaysOut: a DRAINING host stays out even when flags clear.
func TestDrainingStaysOut(t *testing.T) {
	eps := append(hosts("10.0.0.1", 2, state.HealthHealthy), ep{addr: "10.0.0.9:1", weight: 1, health: state.HealthDraining})
	b := newBalancer(&state.Cluster{}, assignment(locality("a", 0, 0, eps)))
	checkShares(t, sharesOf(t, b, 1000, nil), even(1, eps[:2]), 0.08)
}

// TestNewHostsStartHealthCheckFailed: with a health check configured, new
// hosts wait for their first check; existing ones keep their state.
func TestNewHostsStartHealthCheckFailed(t *testing.T) {
	old := hosts("10.0.0.1", 2, state.HealthHealthy)
	b := newBalancer(&state.Cluster{}, assignment(locality("a", 0, 0, old)))
	b.SetNewHostsHealthCheckFailed(true)
	added := hosts("10.0.0.2", 1, state.HealthHealthy)
	b.Update(nil, assignment(locality("a", 0, 0, old, added)))
	for _, h := range b.Hosts() {
		if want := h.Address == added[0].addr; h.HealthCheckFailed() != want {
			t.Errorf("%s: HealthCheckFailed = %v, want %v", h.Address, h.HealthCheckFailed(), want)
		}
	}
	checkShares(t, sharesOf(t, b, 1000, nil), even(1, old), 0.08)
}

// TestHostnameFromEndpoint: Host.Hostname follows the endpoint's hostname
// across updates (auto_host_rewrite).
func TestHostnameFromEndpoint(t *testing.T) {
	mk := func(name string) *state.ClusterLoadAssignment {
		return &state.ClusterLoadAssignment{Localities: []state.LocalityEndpoints{{Endpoints: []state.Endpoint{{Address: "10.0.0.1:80", Hostname: name, Weight: 1}}}}}
	}
	b := newBalancer(&state.Cluster{}, mk("a.example"))
	h := b.Hosts()[0]
	if h.Hostname != "a.example" {
		t.Fatalf("Hostname = %q", h.Hostname)
	}
	b.Update(nil, mk("b.example"))
	if b.Hosts()[0] != h || h.Hostname != "b.example" {
		t.Fatalf("after update: same host %v, Hostname %q", b.Hosts()[0] == h, h.Hostname)
	}
}
