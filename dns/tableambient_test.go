package dns

import (
	"net/netip"
	"slices"
	"testing"
)

// mapClients places the clients of the tests by address.
func mapClients(m map[string]Client) ClientFunc {
	return func(src netip.Addr) (Client, bool) {
		c, ok := m[src.String()]
		return c, ok
	}
}

// TestTableAmbientPick: a hostname several namespaces define is answered
// with one service, as ztunnel picks it: the client's namespace, else a
// canonical one, else the proxy's namespace, else the first (by
// namespace); and only with its VIPs on the client's network (the proxy's
// when the client is unknown), NODATA when it has none there. A picked
// headless service falls through to the other sources, else upstream.
func TestTableAmbientPick(t *testing.T) {
	tab := NewTable(TableConfig{Namespace: "p", Network: "n1", Search: []string{"svc.cluster.local"}})
	tab.SetXDS([]Host{
		{Name: "api.example.com", Addrs: addrs("10.99.0.1")},           // shadowed by the services
		{Name: "hl.shop.svc.cluster.local", Addrs: addrs("10.99.0.2")}, // answers when headless is picked
	})
	tab.SetAmbient([]AmbientService{
		{Hostname: "api.example.com", Namespace: "a", VIPs: vips("n1", "10.1.0.1")},
		{Hostname: "api.example.com", Namespace: "b", VIPs: append(vips("n1", "10.2.0.1", "fd00::2"), vips("n2", "10.2.0.9")...)},
		{Hostname: "cart.shop.svc.cluster.local", Namespace: "shop", VIPs: append(vips("n1", "10.3.0.1", "10.3.0.3"), vips("n2", "10.3.0.2")...)},
		{Hostname: "remote.shop.svc.cluster.local", Namespace: "shop", VIPs: vips("n2", "10.4.0.1")},
		{Hostname: "canon.example.com", Namespace: "p", VIPs: vips("n1", "10.5.0.3")},
		{Hostname: "canon.example.com", Namespace: "x", VIPs: vips("n1", "10.5.0.1")},
		{Hostname: "canon.example.com", Namespace: "y", Canonical: true, VIPs: vips("n1", "10.5.0.2")},
		{Hostname: "pref.example.com", Namespace: "a", VIPs: vips("n1", "10.6.0.1")},
		{Hostname: "pref.example.com", Namespace: "p", VIPs: vips("n1", "10.6.0.2")},
		{Hostname: "hl.shop.svc.cluster.local", Namespace: "other", VIPs: vips("n1", "10.7.0.1")},
		{Hostname: "hl.shop.svc.cluster.local", Namespace: "shop"}, // headless
		{Hostname: "nohost.example.com", Namespace: "a"},           // no VIP, not Kubernetes: dropped
		{Hostname: "*.wild.example.com", Namespace: "a", VIPs: vips("n1", "10.8.0.1")},
		{Hostname: "*.wild.example.com", Namespace: "b", VIPs: vips("n1", "10.8.0.2")},
	})
	clients := mapClients(map[string]Client{
		"10.244.1.1": {Namespace: "a", Network: "n1"},
		"10.244.2.1": {Namespace: "b", Network: "n1"},
		"10.244.2.2": {Namespace: "b", Network: "n2"},
		"10.244.3.1": {Namespace: "shop", Network: "n1"},
		"10.244.3.2": {Namespace: "shop", Network: "n2"},
		"10.244.4.1": {Namespace: "p", Network: "n1"},
		"10.244.5.1": {Namespace: "z", Network: "n1"},
		"10.244.6.1": {Namespace: "other", Network: "n1"},
	})
	const unknownClient = "10.244.9.9"
	tests := []struct {
		name, src string
		want      verdict
		v4, v6    []netip.Addr
	}{
		{"api.example.com.", "10.244.1.1", found, addrs("10.1.0.1"), nil},
		{"api.example.com.", "10.244.2.1", found, addrs("10.2.0.1"), addrs("fd00::2")},
		{"api.example.com.", "10.244.2.2", found, addrs("10.2.0.9"), nil},
		{"api.example.com.", unknownClient, found, addrs("10.1.0.1"), nil}, // first
		{"api.example.com.", "", found, addrs("10.1.0.1"), nil},
		{"api.example.com.", "10.244.5.1", found, addrs("10.1.0.1"), nil},
		{"cart.shop.svc.cluster.local.", "10.244.3.1", found, addrs("10.3.0.1", "10.3.0.3"), nil},
		{"cart.shop.", "10.244.3.2", found, addrs("10.3.0.2"), nil},
		{"cart.shop.svc.", unknownClient, found, addrs("10.3.0.1", "10.3.0.3"), nil},
		{"remote.shop.", "10.244.3.1", found, nil, nil}, // NODATA: no VIP on n1
		{"remote.shop.", "10.244.3.2", found, addrs("10.4.0.1"), nil},
		{"remote.shop.", unknownClient, found, nil, nil},
		{"canon.example.com.", "10.244.4.1", found, addrs("10.5.0.3"), nil}, // own namespace
		{"canon.example.com.", "10.244.5.1", found, addrs("10.5.0.2"), nil}, // canonical
		{"canon.example.com.", unknownClient, found, addrs("10.5.0.2"), nil},
		{"pref.example.com.", "10.244.1.1", found, addrs("10.6.0.1"), nil},
		{"pref.example.com.", "10.244.2.1", found, addrs("10.6.0.2"), nil}, // the proxy's namespace
		{"pref.example.com.", unknownClient, found, addrs("10.6.0.2"), nil},
		{"hl.shop.svc.cluster.local.", "10.244.6.1", found, addrs("10.7.0.1"), nil},
		{"hl.shop.svc.cluster.local.", "10.244.3.1", found, addrs("10.99.0.2"), nil}, // headless picked: xDS
		{"hl.shop.svc.cluster.local.", unknownClient, found, addrs("10.7.0.1"), nil}, // first: "other"
		{"nohost.example.com.", "10.244.1.1", unknown, nil, nil},
		{"x.wild.example.com.", "10.244.2.1", found, addrs("10.8.0.2"), nil},
		{"x.y.wild.example.com.", "10.244.1.1", found, addrs("10.8.0.1"), nil},
		{"cart.shop.svc.cluster.local.svc.cluster.local.", "10.244.3.1", nxdomain, nil, nil},
	}
	ix := tab.cur.Load()
	for _, tc := range tests {
		var src netip.Addr
		if tc.src != "" {
			src = netip.MustParseAddr(tc.src)
		}
		a, v := ix.find(tc.name, src, clients)
		if v != tc.want {
			t.Errorf("%s from %q: verdict %d, want %d", tc.name, tc.src, v, tc.want)
			continue
		}
		if v != found {
			continue
		}
		if !slices.Equal(a.v4, tc.v4) || !slices.Equal(a.v6, tc.v6) {
			t.Errorf("%s from %q: %v %v, want %v %v", tc.name, tc.src, a.v4, a.v6, tc.v4, tc.v6)
		}
	}
	// Without a ClientFunc every client is unknown.
	if a, _ := ix.find("api.example.com.", netip.MustParseAddr("10.244.2.1"), nil); !slices.Equal(a.v4, addrs("10.1.0.1")) {
		t.Errorf("no ClientFunc: %v, want the first service's VIP", a.v4)
	}
}

// TestTableBareNames: a one-label name is a service of the asking pod's
// namespace, as ztunnel expands it ("svc.<client ns>.svc.<domain>"), with
// that service's VIPs on the pod's network; a client the server cannot
// place asks as from the proxy's namespace. Another namespace's service of
// that name never answers, and a one-label host of the table answers as
// itself first.
func TestTableBareNames(t *testing.T) {
	tab := NewTable(TableConfig{Namespace: "p", Network: "n1", Search: []string{"svc.cluster.local"}})
	tab.SetXDS([]Host{
		{Name: "rev.b.svc.cluster.local", Addrs: addrs("10.9.0.1")}, // NDS/xDS names expand too
		{Name: "intranet", Addrs: addrs("10.9.0.2")},
	})
	tab.SetAmbient([]AmbientService{
		{Hostname: "cart.p.svc.cluster.local", Namespace: "p", VIPs: vips("n1", "10.1.0.1")},
		{Hostname: "cart.shop.svc.cluster.local", Namespace: "shop", VIPs: append(vips("n1", "10.2.0.1"), vips("n2", "10.2.0.2")...)},
		{Hostname: "db.shop.svc.cluster.local", Namespace: "shop"}, // headless: forwarded
		{Hostname: "far.shop.svc.cluster.local", Namespace: "shop", VIPs: vips("n2", "10.3.0.1")},
	})
	clients := mapClients(map[string]Client{
		"10.244.1.1": {Namespace: "shop", Network: "n1"},
		"10.244.1.2": {Namespace: "Shop", Network: "n2"},
		"10.244.2.1": {Namespace: "b", Network: "n1"},
		"10.244.3.1": {Namespace: "z", Network: "n1"},
		"10.244.4.1": {Namespace: "p", Network: "n1"},
	})
	const unknownClient = "10.244.9.9"
	tests := []struct {
		name, src string
		want      verdict
		v4        []netip.Addr
	}{
		{"cart.", "10.244.1.1", found, addrs("10.2.0.1")},
		{"CART", "10.244.1.2", found, addrs("10.2.0.2")}, // its network's VIP
		{"cart.", "10.244.4.1", found, addrs("10.1.0.1")},
		{"cart.", unknownClient, found, addrs("10.1.0.1")}, // the proxy's namespace
		{"cart.", "", found, addrs("10.1.0.1")},
		{"cart.", "10.244.3.1", unknown, nil}, // no cart in z: not p's
		{"cart.", "10.244.2.1", unknown, nil},
		{"far.", "10.244.1.1", found, nil}, // NODATA: no VIP on n1
		{"far.", "10.244.1.2", found, addrs("10.3.0.1")},
		{"db.", "10.244.1.1", unknown, nil},
		{"rev.", "10.244.2.1", found, addrs("10.9.0.1")},
		{"rev.", "10.244.1.1", unknown, nil},
		{"rev.", unknownClient, unknown, nil},
		{"intranet.", "10.244.1.1", found, addrs("10.9.0.2")},
		// Partly qualified names do not depend on the client.
		{"cart.shop.", "10.244.2.1", found, addrs("10.2.0.1")},
		{"cart.p.svc.", "10.244.1.1", found, addrs("10.1.0.1")},
		// A bare name with a search domain appended is the resolver's
		// expansion of a mesh name: NXDOMAIN, for the asker's namespace.
		{"cart.svc.cluster.local.", "10.244.1.1", nxdomain, nil},
		{"cart.svc.cluster.local.", unknownClient, nxdomain, nil},
		{"cart.svc.cluster.local.", "10.244.3.1", unknown, nil},
	}
	ix := tab.cur.Load()
	for _, tc := range tests {
		var src netip.Addr
		if tc.src != "" {
			src = netip.MustParseAddr(tc.src)
		}
		a, v := ix.find(tc.name, src, clients)
		if v != tc.want {
			t.Errorf("%s from %q: verdict %d, want %d", tc.name, tc.src, v, tc.want)
			continue
		}
		if v == found && (!slices.Equal(a.v4, tc.v4) || len(a.v6) != 0) {
			t.Errorf("%s from %q: %v %v, want %v", tc.name, tc.src, a.v4, a.v6, tc.v4)
		}
	}
}
