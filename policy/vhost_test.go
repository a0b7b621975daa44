package policy

import (
	"runtime"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

func vhosts(domains ...[]string) *state.RouteConfig {
	rc := &state.RouteConfig{Name: "rc"}
	for i, d := range domains {
		rc.VirtualHosts = append(rc.VirtualHosts, &state.VirtualHost{
			Name:    string(rune('a' + i)),
			Domains: d,
			Routes:  []*state.Route{{Name: "r", Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true}}},
		})
	}
	return rc
}

func TestSelectVirtualHost(t *testing.T) {
	rc := vhosts(
		[]string{"api.foo.com"},            // a
		[]string{"*.foo.com"},              // b
		[]string{"*.bar.foo.com"},          // c
		[]string{"*-bar.foo.com"},          // d
		[]string{"foo.*"},                  // e
		[]string{"foo.bar.*"},              // f
		[]string{"*"},                      // g
		[]string{"port.com:8080"},          // h
		[]string{"port.com"},               // i
		[]string{"[::1]", "10.0.0.1:9000"}, // j
		[]string{"api.foo.com:443"},        // k
	)
	tests := []struct {
		authority string
		want      string
	}{
		{"api.foo.com", "a"},
		{"API.Foo.COM", "a"},      // case-insensitive
		{"www.foo.com", "b"},      // suffix wildcard
		{"x.bar.foo.com", "c"},    // longest suffix wins
		{"x-bar.foo.com", "d"},    // "*-bar" form
		{".foo.com", "g"},         // '*' must match at least one char
		{"foo.com", "e"},          // prefix wildcard (suffix "*.foo.com" needs a label)
		{"foo.bar.baz", "f"},      // longest prefix wins
		{"foo.x", "e"},            // shorter prefix
		{"other.org", "g"},        // default
		{"api.foo.com:8080", "g"}, // Envoy: "host:port" does not match a domain without the port
		{"api.foo.com:443", "k"},  // full host:port domain wins over bare
		{"port.com:8080", "h"},    // domain with port matches that port
		{"port.com:9090", "g"},    // other port: only "*"
		{"port.com", "i"},         //
		{"[::1]:80", "g"},         // IPv6 with a port the domain lacks
		{"[::1]", "j"},            // IPv6 without port
		{"10.0.0.1:9000", "j"},    // IP with port domain
		{"10.0.0.1:9001", "g"},    // IP, other port
		{"www.foo.com:80", "g"},   // a suffix wildcard does not cover a port
		{"x.bar.foo.com:1", "g"},  //
		{"foo.y:80", "e"},         // prefix matches full "foo.y:80" too
		{"api.foo.com:abc", "g"},  // non-numeric port: compared whole, nothing but "*" matches
	}
	for _, tt := range tests {
		vh := SelectVirtualHost(rc, tt.authority)
		got := "<nil>"
		if vh != nil {
			got = vh.Name
		}
		if got != tt.want {
			t.Errorf("authority %q: got vhost %s, want %s", tt.authority, got, tt.want)
		}
	}
}

// TestSelectVirtualHostIgnorePort: with ignore_port_in_host_matching the
// port is dropped before matching, so bare domains match any port.
func TestSelectVirtualHostIgnorePort(t *testing.T) {
	rc := vhosts([]string{"api.foo.com"}, []string{"*.foo.com"}, []string{"*"})
	rc.IgnorePortInHostMatching = true
	for authority, want := range map[string]string{
		"api.foo.com:8080": "a",
		"www.foo.com:80":   "b",
		"other.org:1":      "c",
		"api.foo.com":      "a",
	} {
		if vh := SelectVirtualHost(rc, authority); vh == nil || vh.Name != want {
			t.Errorf("authority %q: got %v, want %s", authority, vh, want)
		}
	}
}

func TestSelectVirtualHostNoDefault(t *testing.T) {
	rc := vhosts([]string{"a.com"}, []string{"*.b.com"})
	for _, a := range []string{"", "c.com", "b.com", "a.com.", ":80"} {
		if vh := SelectVirtualHost(rc, a); vh != nil {
			t.Errorf("authority %q: got vhost %s, want none", a, vh.Name)
		}
	}
	if vh, rt := SelectRoute(rc, get("c.com", "/")); vh != nil || rt != nil {
		t.Errorf("SelectRoute on unknown host = %v, %v; want nil, nil", vh, rt)
	}
	if vh, rt := SelectRoute(nil, get("c.com", "/")); vh != nil || rt != nil {
		t.Errorf("SelectRoute(nil) = %v, %v; want nil, nil", vh, rt)
	}
}

func TestSelectVirtualHostDuplicateFirstWins(t *testing.T) {
	rc := vhosts([]string{"a.com", "*"}, []string{"a.com", "*"})
	if vh := SelectVirtualHost(rc, "a.com"); vh == nil || vh.Name != "a" {
		t.Errorf("duplicate exact domain: got %v, want first vhost", vh)
	}
	if vh := SelectVirtualHost(rc, "z.com"); vh == nil || vh.Name != "a" {
		t.Errorf("duplicate default: got %v, want first vhost", vh)
	}
}

func TestSelectVirtualHostLongAuthority(t *testing.T) {
	long := make([]byte, 1000)
	for i := range long {
		long[i] = 'A'
	}
	host := string(long) + ".foo.com"
	rc := vhosts([]string{"*.foo.com"})
	if vh := SelectVirtualHost(rc, host); vh == nil {
		t.Errorf("1000-byte label under *.foo.com: no vhost")
	}
}

func TestSelectRouteFirstMatchWins(t *testing.T) {
	vh := &state.VirtualHost{Name: "vh", Domains: []string{"*"}, Routes: []*state.Route{
		{Name: "exact", Match: state.RouteMatch{Kind: state.PathExact, Path: "/a", CaseSensitive: true}},
		{Name: "prefix-a", Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/a", CaseSensitive: true}},
		{Name: "grpc", Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true, GRPC: true}},
		{Name: "hdr", Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true,
			Headers: []state.HeaderMatcher{{Name: "x-v", Kind: state.HeaderExact, String: state.StringMatcher{Kind: state.StringExact, Value: "2"}}}}},
		{Name: "b-only", Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/b", CaseSensitive: true}},
	}}
	rc := &state.RouteConfig{VirtualHosts: []*state.VirtualHost{vh}}
	tests := []struct {
		r    *req
		want string
	}{
		{get("h", "/a"), "exact"},
		{get("h", "/a?x=1"), "exact"},
		{get("h", "/ab"), "prefix-a"},
		{get("h", "/x", "content-type", "application/grpc"), "grpc"},
		{get("h", "/x", "x-v", "2"), "hdr"},
		{get("h", "/b/c"), "b-only"},
		{get("h", "/c"), ""},
	}
	for _, tt := range tests {
		gotVH, rt := SelectRoute(rc, tt.r)
		if gotVH != vh {
			t.Fatalf("%s: vhost %v, want vh", tt.r.path, gotVH)
		}
		got := ""
		if rt != nil {
			got = rt.Name
		}
		if got != tt.want {
			t.Errorf("path %q headers %v: route %q, want %q", tt.r.path, tt.r.hdr, got, tt.want)
		}
	}
}

// A new RouteConfig pointer gets its own index even when an older config
// was already indexed, and a dropped config's index is released.
func TestIndexPerConfigAndReleased(t *testing.T) {
	old := vhosts([]string{"a.com"})
	if vh := SelectVirtualHost(old, "a.com"); vh == nil {
		t.Fatal("old config: a.com not found")
	}
	next := vhosts([]string{"b.com"})
	if vh := SelectVirtualHost(next, "a.com"); vh != nil {
		t.Errorf("new config answered from old index: %v", vh.Name)
	}
	if vh := SelectVirtualHost(next, "b.com"); vh == nil {
		t.Error("new config: b.com not found")
	}

	count := func() int { return cacheLen(cache.Load()) }
	before := count()
	func() {
		tmp := vhosts([]string{"tmp.com"})
		SelectVirtualHost(tmp, "tmp.com")
	}()
	if count() != before+1 {
		t.Fatalf("cache size %d, want %d", count(), before+1)
	}
	deadline := time.Now().Add(5 * time.Second)
	for count() > before && time.Now().Before(deadline) {
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
	if count() > before {
		t.Errorf("index for a dropped RouteConfig was not released (cache size %d, want %d)", count(), before)
	}
	runtime.KeepAlive(old)
	runtime.KeepAlive(next)
}
