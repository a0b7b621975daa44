package whitebox

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// sidecarStore holds sidecar-style listeners: a wildcard HTTP listener on
// 8080 with RDS routes (web, plus the allow_any catch-all), a VIP
// listener for a TCP service, and a wildcard TCP listener whose chain
// matches the VIP by destination prefix.
func sidecarStore() *state.Store {
	st := state.NewStore()
	st.Update(func(s *state.Snapshot) bool {
		s.Listeners["0.0.0.0_8080"] = &state.Listener{
			Name:    "0.0.0.0_8080",
			Address: netip.MustParseAddrPort("0.0.0.0:8080"),
			FilterChains: []*state.FilterChain{{
				HTTP: &state.HTTPConnectionManager{RDSName: "8080"},
			}},
		}
		s.Routes["8080"] = &state.RouteConfig{Name: "8080", VirtualHosts: []*state.VirtualHost{
			{Name: "web", Domains: []string{"web.default.svc.cluster.local", "web.default.svc.cluster.local:8080", "*.web.example"}},
			{Name: "allow_any", Domains: []string{"*"}},
		}}
		s.Listeners["10.96.0.10_9000"] = &state.Listener{
			Name:    "10.96.0.10_9000",
			Address: netip.MustParseAddrPort("10.96.0.10:9000"),
			FilterChains: []*state.FilterChain{{
				TCPProxy: &state.TCPProxy{Cluster: "outbound|9000||echo.default.svc.cluster.local"},
			}},
		}
		s.Listeners["0.0.0.0_5432"] = &state.Listener{
			Name:    "0.0.0.0_5432",
			Address: netip.MustParseAddrPort("0.0.0.0:5432"),
			FilterChains: []*state.FilterChain{{
				Match:    state.FilterChainMatch{PrefixRanges: []netip.Prefix{netip.MustParsePrefix("10.96.0.20/32")}},
				TCPProxy: &state.TCPProxy{WeightedClusters: []state.WeightedCluster{{Name: "db", Weight: 1}}},
			}},
		}
		return true
	})
	return st
}

func TestResolve(t *testing.T) {
	dns := map[string]netip.Addr{"example.com": netip.MustParseAddr("93.184.216.34")}
	r := resolver{store: sidecarStore(), lookup: func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, ok := dns[host]; ok {
			return []netip.Addr{netip.MustParseAddr("2001:db8::1"), a}, nil
		}
		return nil, errors.New("no such host")
	}}
	for _, tt := range []struct {
		host string
		port uint16
		want string // "" = ErrUnknownDestination
	}{
		{"web.default.svc.cluster.local", 8080, "0.0.0.0:8080"},
		{"WEB.default.svc.cluster.local.", 8080, "0.0.0.0:8080"},
		{"a.web.example", 8080, "0.0.0.0:8080"},
		{"echo.default.svc.cluster.local", 9000, "10.96.0.10:9000"},
		{"db", 5432, "10.96.0.20:5432"},
		{"10.1.2.3", 80, "10.1.2.3:80"},
		{"[::1]", 80, "[::1]:80"},
		{"example.com", 443, "93.184.216.34:443"}, // DNS, IPv4 preferred
		// Right name, wrong port: the mesh serves web on 8080 only.
		{"web.default.svc.cluster.local", 80, ""},
		// allow_any's "*" does not make every name a mesh name.
		{"nope.default.svc.cluster.local", 8080, ""},
		{"echo.default.svc.cluster.local", 9001, ""},
	} {
		got, err := r.resolve(context.Background(), tt.host, tt.port)
		if tt.want == "" {
			if !errors.Is(err, ErrUnknownDestination) {
				t.Errorf("resolve(%s, %d) = %v, %v; want ErrUnknownDestination", tt.host, tt.port, got, err)
			}
			continue
		}
		if err != nil || got.String() != tt.want {
			t.Errorf("resolve(%s, %d) = %v, %v; want %s", tt.host, tt.port, got, err, tt.want)
		}
	}
}

func TestParseForward(t *testing.T) {
	for _, tt := range []struct {
		in, listen, target string
		ok                 bool
	}{
		{"127.0.0.1:9080=reviews.default.svc.cluster.local:9080", "127.0.0.1:9080", "reviews.default.svc.cluster.local:9080", true},
		{"9080=reviews:9080", "127.0.0.1:9080", "reviews:9080", true},
		{"[::1]:80=10.0.0.1:80", "[::1]:80", "10.0.0.1:80", true},
		{"0.0.0.0:9080=reviews:9080", "", "", false}, // not loopback
		{"127.0.0.1:9080=reviews", "", "", false},    // no port
		{"127.0.0.1:9080", "", "", false},
		{"127.0.0.1:9080=reviews:0", "", "", false},
	} {
		f, err := ParseForward(tt.in)
		if (err == nil) != tt.ok || f.Listen != tt.listen || f.Target != tt.target {
			t.Errorf("ParseForward(%q) = %+v, %v; want ok=%v %s=%s", tt.in, f, err, tt.ok, tt.listen, tt.target)
		}
	}
}
