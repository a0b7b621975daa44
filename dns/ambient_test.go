package dns

import (
	"net/netip"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// TestWatchStoreAmbient: node-mode services from the Workload API are
// answered, in every Kubernetes name form, and go when the service goes.
func TestWatchStoreAmbient(t *testing.T) {
	store := state.NewStore()
	tab := NewTable(TableConfig{Namespace: "shop"})
	tab.WatchStore(store)
	has := func(name string) bool { _, v := tab.cur.Load().lookup(name); return v == found }
	vip := netip.MustParseAddr("10.96.0.7")
	svc := &state.Service{Name: "cart", Namespace: "shop", Hostname: "cart.shop.svc.cluster.local",
		Addresses: []state.NetworkAddr{{Addr: vip}}}
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
	if got := HostsFromAmbient(store.Load().Ambient); len(got) != 1 || got[0].Addrs[0] != vip {
		t.Errorf("HostsFromAmbient = %+v", got)
	}
	store.Update(func(s *state.Snapshot) bool { s.Ambient = state.NewAmbient(nil, nil, nil); return true })
	if has("cart.shop.svc.cluster.local.") {
		t.Error("service still answered after it was removed")
	}
}
