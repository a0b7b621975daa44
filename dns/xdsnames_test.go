package dns

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestHostsFromSnapshot(t *testing.T) {
	snap := state.Empty()
	tcp := func(cluster string) *state.FilterChain {
		return &state.FilterChain{TCPProxy: &state.TCPProxy{Cluster: cluster}}
	}
	snap.Listeners["10.96.0.5_3306"] = &state.Listener{
		Address:      netip.MustParseAddrPort("10.96.0.5:3306"),
		FilterChains: []*state.FilterChain{tcp("outbound|3306||mysql.db.svc.cluster.local")},
	}
	snap.Listeners["10.96.0.6_5432"] = &state.Listener{
		Address: netip.MustParseAddrPort("10.96.0.6:5432"),
		FilterChains: []*state.FilterChain{{TCPProxy: &state.TCPProxy{WeightedClusters: []state.WeightedCluster{
			{Name: "outbound|5432|v1|pg.db.svc.cluster.local"}, {Name: "plain-cluster"},
		}}}},
	}
	// A second port of the same service on another VIP family.
	snap.Listeners["[fd00::5]_3306"] = &state.Listener{
		Address:            netip.MustParseAddrPort("[fd00::5]:3306"),
		DefaultFilterChain: tcp("outbound|3306||mysql.db.svc.cluster.local"),
	}
	snap.Routes["9080"] = &state.RouteConfig{Name: "9080", VirtualHosts: []*state.VirtualHost{{
		Domains: []string{"reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local:9080", "reviews", "10.96.0.7", "*.wild.com", "*"},
	}}}
	snap.Listeners["10.96.0.7_9080"] = &state.Listener{
		Address:      netip.MustParseAddrPort("10.96.0.7:9080"),
		FilterChains: []*state.FilterChain{{HTTP: &state.HTTPConnectionManager{RDSName: "9080"}}},
	}
	// Istio's shared HTTP route: the virtual host lists the VIPs.
	snap.Routes["9081"] = &state.RouteConfig{Name: "9081", VirtualHosts: []*state.VirtualHost{
		{Domains: []string{"details.default.svc.cluster.local", "details.default.svc.cluster.local:9081", "details", "10.96.0.8", "10.96.0.8:9081", "[fd00::8]:9081"}},
		{Name: "allow_any", Domains: []string{"*"}},
	}}
	snap.Listeners["0.0.0.0_9081"] = &state.Listener{
		Address:      netip.MustParseAddrPort("0.0.0.0:9081"),
		FilterChains: []*state.FilterChain{{HTTP: &state.HTTPConnectionManager{RDSName: "9081"}}},
	}
	// Wildcard and loopback listeners say nothing about a VIP.
	snap.Listeners["0.0.0.0_80"] = &state.Listener{
		Address:      netip.MustParseAddrPort("0.0.0.0:80"),
		FilterChains: []*state.FilterChain{tcp("outbound|80||any.default.svc.cluster.local")},
	}
	snap.Listeners["lo"] = &state.Listener{
		Address:      netip.MustParseAddrPort("127.0.0.1:81"),
		FilterChains: []*state.FilterChain{tcp("outbound|81||lo.default.svc.cluster.local")},
	}
	got := HostsFromSnapshot(snap)
	want := []Host{
		{Name: "details.default.svc.cluster.local", Addrs: addrs("10.96.0.8", "fd00::8")},
		{Name: "mysql.db.svc.cluster.local", Addrs: addrs("10.96.0.5", "fd00::5")},
		{Name: "pg.db.svc.cluster.local", Addrs: addrs("10.96.0.6")},
		{Name: "reviews.default.svc.cluster.local", Addrs: addrs("10.96.0.7")},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	for i := range want {
		g := got[i]
		slices.SortFunc(g.Addrs, netip.Addr.Compare)
		if g.Name != want[i].Name || !slices.Equal(g.Addrs, want[i].Addrs) {
			t.Errorf("host %d: got %+v, want %+v", i, g, want[i])
		}
	}
}

// TestWatchStore: a listener pushed into the store shows up as a name; its
// removal takes the name away.
func TestWatchStore(t *testing.T) {
	store := state.NewStore()
	tab := NewTable(TableConfig{Namespace: "ns"})
	tab.WatchStore(store)
	has := func() bool { _, v := tab.cur.Load().lookup("web.ns."); return v == found }
	if has() {
		t.Fatal("name before any listener")
	}
	store.Update(func(s *state.Snapshot) bool {
		s.Listeners["l"] = &state.Listener{
			Address:      netip.MustParseAddrPort("10.5.0.1:80"),
			FilterChains: []*state.FilterChain{{TCPProxy: &state.TCPProxy{Cluster: "outbound|80||web.ns.svc.cluster.local"}}},
		}
		return true
	})
	if !has() {
		t.Fatal("name missing after the listener arrived")
	}
	store.Update(func(s *state.Snapshot) bool { delete(s.Listeners, "l"); return true })
	if has() {
		t.Fatal("name still there after the listener went")
	}
}
