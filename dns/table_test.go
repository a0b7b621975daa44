package dns

import (
	"net/netip"
	"slices"
	"testing"

	"github.com/meshlet/meshlet/dns/ndspb"
)

// lookup resolves name for an unknown client (the tests of the sources
// that do not depend on the client).
func (ix *index) lookup(name string) (*answer, verdict) { return ix.find(name, netip.Addr{}, nil) }

func addrs(s ...string) []netip.Addr {
	out := make([]netip.Addr, len(s))
	for i, a := range s {
		out[i] = netip.MustParseAddr(a)
	}
	return out
}

func TestTableLookup(t *testing.T) {
	tab := NewTable(TableConfig{Namespace: "default", Search: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}})
	tab.SetXDS([]Host{
		{Name: "reviews.default.svc.cluster.local", Addrs: addrs("10.0.0.1", "fd00::1")},
		{Name: "ratings.bookinfo.svc.cluster.local", Addrs: addrs("10.0.0.2")},
		{Name: "api.example.com", Addrs: addrs("10.0.0.3")},
		{Name: "*.wild.example.com", Addrs: addrs("10.0.0.4")},
		{Name: "noaddr.default.svc.cluster.local"},
	})
	tests := []struct {
		name   string
		want   verdict
		v4, v6 []netip.Addr
	}{
		{"reviews.default.svc.cluster.local.", found, addrs("10.0.0.1"), addrs("fd00::1")},
		{"Reviews.Default.SVC.cluster.local", found, addrs("10.0.0.1"), addrs("fd00::1")},
		{"reviews.default.svc.", found, addrs("10.0.0.1"), addrs("fd00::1")},
		{"reviews.default.", found, addrs("10.0.0.1"), addrs("fd00::1")},
		{"reviews.", found, addrs("10.0.0.1"), addrs("fd00::1")}, // own namespace
		{"ratings.bookinfo.svc.cluster.local.", found, addrs("10.0.0.2"), nil},
		{"ratings.bookinfo.", found, addrs("10.0.0.2"), nil},
		{"ratings.", unknown, nil, nil}, // other namespace: no bare name
		{"api.example.com.", found, addrs("10.0.0.3"), nil},
		{"api.", unknown, nil, nil},
		{"REVIEWS", found, addrs("10.0.0.1"), addrs("fd00::1")},
		{"reviews.svc.cluster.local.", nxdomain, nil, nil}, // bare name + search domain
		{"ratings.svc.cluster.local.", unknown, nil, nil},
		{"a.wild.example.com.", found, addrs("10.0.0.4"), nil},
		{"a.b.wild.example.com.", found, addrs("10.0.0.4"), nil},
		{"wild.example.com.", unknown, nil, nil},
		// Search expansions of mesh names cannot exist.
		{"reviews.default.svc.cluster.local.default.svc.cluster.local.", nxdomain, nil, nil},
		{"ratings.bookinfo.svc.cluster.local.svc.cluster.local.", nxdomain, nil, nil},
		{"api.example.com.cluster.local.", nxdomain, nil, nil},
		{"ratings.default.svc.cluster.local.", unknown, nil, nil},
		{"www.google.com.default.svc.cluster.local.", unknown, nil, nil},
		{"noaddr.default.svc.cluster.local.", unknown, nil, nil},
		{".", unknown, nil, nil},
	}
	ix := tab.cur.Load()
	for _, tc := range tests {
		a, v := ix.lookup(tc.name)
		if v != tc.want {
			t.Errorf("lookup(%q) = verdict %d, want %d", tc.name, v, tc.want)
			continue
		}
		if v != found {
			continue
		}
		if !slices.Equal(a.v4, tc.v4) || !slices.Equal(a.v6, tc.v6) {
			t.Errorf("lookup(%q) = %v %v, want %v %v", tc.name, a.v4, a.v6, tc.v4, tc.v6)
		}
	}
}

// TestTableSources: NDS, once received, replaces the names derived from
// xDS; node-mode services always count, and a name they answer is
// answered from them alone.
func TestTableSources(t *testing.T) {
	tab := NewTable(TableConfig{Namespace: "ns"})
	has := func(name string) bool { _, v := tab.cur.Load().lookup(name); return v == found }
	tab.SetXDS([]Host{{Name: "fromxds.ns.svc.cluster.local", Addrs: addrs("10.1.0.1")}})
	if !has("fromxds.ns") {
		t.Fatal("xDS-derived name missing before NDS")
	}
	tab.SetNDS(HostsFromNameTable(&ndspb.NameTable{Table: map[string]*ndspb.NameTable_NameInfo{
		"fromnds.ns.svc.cluster.local": {Ips: []string{"10.2.0.1", "bogus"}, Registry: "Kubernetes", Shortname: "fromnds", Namespace: "ns"},
		"se.example.com":               {Ips: []string{"10.2.0.2"}},
		// Kubernetes-shaped, but a ServiceEntry: no short forms.
		"fake.ns.svc.cluster.local": {Ips: []string{"10.2.0.3"}, Registry: "External"},
	}}))
	tab.SetAmbient([]AmbientService{
		{Hostname: "fromnds.ns.svc.cluster.local", Namespace: "ns", VIPs: vips("", "10.3.0.1")},
		{Hostname: "amb.ns.svc.cluster.local", Namespace: "ns", VIPs: vips("", "10.3.0.2")},
	})
	for name, want := range map[string]bool{
		"fromxds.ns": false, "fromnds": true, "fromnds.ns.svc": true, "se.example.com": true,
		"fake.ns.svc.cluster.local": true, "fake.ns": false, "amb": true, "amb.ns.svc.cluster.local": true,
	} {
		if got := has(name); got != want {
			t.Errorf("%s: found %v, want %v", name, got, want)
		}
	}
	a, _ := tab.cur.Load().lookup("fromnds.ns")
	if got := a.v4; !slices.Equal(got, addrs("10.3.0.1")) {
		t.Errorf("a name both NDS and the Workload API have: %v, want the service's VIP only", got)
	}
	// fromnds.ns.svc.cluster.local, fromnds.ns, fromnds.ns.svc,
	// se.example.com, fake.ns.svc.cluster.local and amb's three forms (bare
	// names are expanded per query, not indexed).
	if got := tab.Len(); got != 8 {
		t.Errorf("Len = %d, want 8", got)
	}
	tab.SetNDS(nil) // an empty NameTable is still NDS: xDS stays unused
	if has("fromxds.ns") || has("se.example.com") {
		t.Error("empty NDS did not replace the previous names")
	}
}

func TestKubeParts(t *testing.T) {
	for _, tc := range []struct{ host, svc, ns string }{
		{"a.b.svc.cluster.local", "a", "b"},
		{"a.b.c.svc.cluster.local", "", ""},
		{"a.svc.cluster.local", "", ""},
		{"a.b.svc.other.local", "", ""},
	} {
		svc, ns, _ := kubeParts(tc.host, "cluster.local")
		if svc != tc.svc || ns != tc.ns {
			t.Errorf("kubeParts(%q) = %q %q, want %q %q", tc.host, svc, ns, tc.svc, tc.ns)
		}
	}
}
