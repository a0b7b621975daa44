package dns

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// vips tags each address with network.
func vips(network string, ips ...string) []state.NetworkAddr {
	out := make([]state.NetworkAddr, len(ips))
	for i, ip := range ips {
		out[i] = state.NetworkAddr{Network: network, Addr: netip.MustParseAddr(ip)}
	}
	return out
}

// TestWatchStoreAmbient: node-mode services from the Workload API are
// answered, in every Kubernetes name form, and go when the service goes;
// a headless one is left to upstream.
func TestWatchStoreAmbient(t *testing.T) {
	store := state.NewStore()
	tab := NewTable(TableConfig{Namespace: "shop"})
	tab.WatchStore(store)
	has := func(name string) bool { _, v := tab.cur.Load().lookup(name); return v == found }
	svc := &state.Service{Name: "cart", Namespace: "shop", Hostname: "cart.shop.svc.cluster.local",
		Addresses: vips("", "10.96.0.7"), Canonical: true}
	headless := &state.Service{Name: "db", Namespace: "shop", Hostname: "db.shop.svc.cluster.local"}
	store.Update(func(s *state.Snapshot) bool {
		s.Ambient = state.NewAmbient(nil, map[string]*state.Service{svc.Key(): svc, headless.Key(): headless}, nil)
		return true
	})
	for _, name := range []string{"cart.shop.svc.cluster.local.", "cart.shop.svc.", "cart.shop.", "cart."} {
		if !has(name) {
			t.Errorf("%s not answered", name)
		}
	}
	if has("db.shop.svc.cluster.local.") {
		t.Error("headless service answered without an address")
	}
	want := []AmbientService{
		{Hostname: "cart.shop.svc.cluster.local", Namespace: "shop", Canonical: true, VIPs: vips("", "10.96.0.7")},
		{Hostname: "db.shop.svc.cluster.local", Namespace: "shop"},
	}
	got := ServicesFromAmbient(store.Load().Ambient)
	if !slices.EqualFunc(got, want, func(x, y AmbientService) bool {
		return x.Hostname == y.Hostname && x.Namespace == y.Namespace && x.Canonical == y.Canonical && slices.Equal(x.VIPs, y.VIPs)
	}) {
		t.Errorf("ServicesFromAmbient = %+v, want %+v", got, want)
	}
	store.Update(func(s *state.Snapshot) bool { s.Ambient = state.NewAmbient(nil, nil, nil); return true })
	if has("cart.shop.svc.cluster.local.") {
		t.Error("service still answered after it was removed")
	}
}

// TestStoreClients: a query's source address is placed as the workload
// at that address on the proxy's network; other addresses (another
// network's workload, a host-network pod, anything else) are unknown.
func TestStoreClients(t *testing.T) {
	store := state.NewStore()
	ws := map[string]*state.Workload{
		"a":    {UID: "a", Namespace: "ns-a", Network: "n1", Addresses: addrs("10.244.0.1")},
		"far":  {UID: "far", Namespace: "ns-far", Network: "n2", Addresses: addrs("10.244.0.2")},
		"host": {UID: "host", Namespace: "ns-host", Network: "n1", Addresses: addrs("10.244.0.3"), HostNetwork: true},
	}
	store.Update(func(s *state.Snapshot) bool { s.Ambient = state.NewAmbient(ws, nil, nil); return true })
	clients := StoreClients(store, "n1")
	for _, tc := range []struct {
		src  string
		want Client
		ok   bool
	}{
		{"10.244.0.1", Client{Namespace: "ns-a", Network: "n1"}, true},
		{"::ffff:10.244.0.1", Client{Namespace: "ns-a", Network: "n1"}, true},
		{"10.244.0.2", Client{}, false},
		{"10.244.0.3", Client{}, false},
		{"127.0.0.1", Client{}, false},
	} {
		got, ok := clients(netip.MustParseAddr(tc.src))
		if got != tc.want || ok != tc.ok {
			t.Errorf("clients(%s) = %+v %v, want %+v %v", tc.src, got, ok, tc.want, tc.ok)
		}
	}
}
