package upstream

import (
	"context"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestAutoSNIName(t *testing.T) {
	on := state.AutoSNI{SNI: true}
	hdr := func(m map[string]string) func(string) (string, bool) {
		return func(n string) (string, bool) { v, ok := m[n]; return v, ok }
	}
	tests := []struct {
		name string
		a    state.AutoSNI
		host string
		h    map[string]string
		want string
	}{
		{"off", state.AutoSNI{}, "a.example", nil, ""},
		{"host", on, "a.example", nil, "a.example"},
		{"port dropped, lower case", on, "A.Example:8443", nil, "a.example"},
		{"trailing dot", on, "a.example.", nil, "a.example"},
		{"ipv4", on, "10.0.0.1:80", nil, ""},
		{"ipv6", on, "[::1]:80", nil, ""},
		{"ipv6 no port", on, "[::1]", nil, ""},
		{"san validation alone", state.AutoSNI{SANValidation: true}, "b.example", nil, "b.example"},
		{"override header", state.AutoSNI{SNI: true, Header: "x-sni"}, "a.example", map[string]string{"x-sni": "o.example"}, "o.example"},
		{"override header empty", state.AutoSNI{SNI: true, Header: "x-sni"}, "a.example", map[string]string{"x-sni": ""}, "a.example"},
		{"override header missing", state.AutoSNI{SNI: true, Header: "x-sni"}, "a.example", nil, "a.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := AutoSNIName(tc.a, tc.host, hdr(tc.h)); got != tc.want {
				t.Errorf("AutoSNIName = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestAutoSNIDial: each name gets its own endpoint (so its own pools); a
// named dial sends the name as SNI over the context's sni and, with
// auto_san_validation, refuses a certificate without the name; the plain
// endpoint keeps the configured sni and checks no name.
func TestAutoSNIDial(t *testing.T) {
	root := newRootCA(t)
	srv := newSNIServer(t, root.intermediate(t).leaf(t, "*.svc.example", "exact.example"))
	tests := []struct {
		name    string
		auto    state.AutoSNI
		ep      string // auto_sni name; "" = plain endpoint
		wantSNI string
		wantErr string
	}{
		{"plain endpoint keeps sni", state.AutoSNI{SNI: true, SANValidation: true}, "", "configured.example", ""},
		{"auto sni exact", state.AutoSNI{SNI: true, SANValidation: true}, "exact.example", "exact.example", ""},
		{"auto sni wildcard", state.AutoSNI{SNI: true, SANValidation: true}, "a.svc.example", "a.svc.example", ""},
		{"wildcard is one label", state.AutoSNI{SNI: true, SANValidation: true}, "a.b.svc.example", "a.b.svc.example", "do not match"},
		{"name not in cert", state.AutoSNI{SNI: true, SANValidation: true}, "other.example", "other.example", "do not match"},
		{"auto sni without validation", state.AutoSNI{SNI: true}, "other.example", "other.example", ""},
		{"validation without auto sni", state.AutoSNI{SANValidation: true}, "other.example", "configured.example", "do not match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			store := state.NewStore()
			m := NewManager(store, nilLogger())
			defer m.Close()
			store.Update(func(s *state.Snapshot) bool {
				s.Clusters["c"] = &state.Cluster{Name: "c", Type: state.ClusterStatic, LoadAssignment: cla("c", srv.addr),
					TLS: &state.UpstreamTLS{SNI: "configured.example", RootCAPEM: root.pem()}, AutoSNI: tc.auto}
				return true
			})
			c := m.Cluster("c")
			h := c.LB.Hosts()[0]
			ep := c.EndpointFor(h, tc.ep)
			if ep.Name != tc.ep {
				t.Fatalf("endpoint name %q, want %q", ep.Name, tc.ep)
			}
			before := len(srv.seen())
			conn, err := ep.Dial(context.Background())
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("dial err = %v, want %q", err, tc.wantErr)
			}
			if conn != nil {
				conn.Close()
			}
			if got := srv.seen()[before:]; !reflect.DeepEqual(got, []string{tc.wantSNI}) {
				t.Errorf("server saw SNI %q, want %q", got, tc.wantSNI)
			}
		})
	}
}

// TestEndpointForPerName: names get separate endpoints, the same name the
// same one; a cluster without auto_sni, or without TLS, has one endpoint
// per host; removed
// hosts take their named endpoints with them.
func TestEndpointForPerName(t *testing.T) {
	store := state.NewStore()
	m := NewManager(store, nilLogger())
	defer m.Close()
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["auto"] = &state.Cluster{Name: "auto", Type: state.ClusterEDS, EDSServiceName: "auto", AutoSNI: state.AutoSNI{SNI: true}, TLS: &state.UpstreamTLS{}}
		s.Endpoints["auto"] = cla("auto", "127.0.0.1:1")
		s.Clusters["plain"] = &state.Cluster{Name: "plain", Type: state.ClusterStatic, LoadAssignment: cla("plain", "127.0.0.1:2")}
		s.Clusters["cleartext"] = &state.Cluster{Name: "cleartext", Type: state.ClusterStatic, LoadAssignment: cla("cleartext", "127.0.0.1:4"), AutoSNI: state.AutoSNI{SNI: true}}
		return true
	})
	auto := m.Cluster("auto")
	h := auto.LB.Hosts()[0]
	a, b := auto.EndpointFor(h, "a.example"), auto.EndpointFor(h, "b.example")
	if a == b || a != auto.EndpointFor(h, "a.example") || a == auto.Endpoint(h) {
		t.Fatal("auto_sni endpoints are not one per name")
	}
	pool := &closer{}
	a.Pool(PoolHTTP1, func(*Endpoint) io.Closer { return pool })
	plain := m.Cluster("plain")
	ph := plain.LB.Hosts()[0]
	if plain.EndpointFor(ph, "a.example") != plain.Endpoint(ph) {
		t.Fatal("a cluster without auto_sni must not split its pools")
	}
	clear := m.Cluster("cleartext")
	ch := clear.LB.Hosts()[0]
	if clear.EndpointFor(ch, "a.example") != clear.Endpoint(ch) {
		t.Fatal("a host dialed without TLS must not split its pools")
	}
	store.Update(func(s *state.Snapshot) bool {
		s.Endpoints["auto"] = cla("auto", "127.0.0.1:3")
		return true
	})
	if !pool.closed.Load() {
		t.Fatal("pool of a removed host's named endpoint not closed")
	}
}

// TestEndpointForBounded: a client choosing Host headers cannot grow the
// named endpoints of a host without bound.
func TestEndpointForBounded(t *testing.T) {
	store := state.NewStore()
	m := NewManager(store, nilLogger())
	defer m.Close()
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["auto"] = &state.Cluster{Name: "auto", Type: state.ClusterStatic, LoadAssignment: cla("auto", "127.0.0.1:1"), AutoSNI: state.AutoSNI{SNI: true}, TLS: &state.UpstreamTLS{}}
		return true
	})
	c := m.Cluster("auto")
	h := c.LB.Hosts()[0]
	for i := range 3 * maxNamesPerHost {
		c.EndpointFor(h, fmt.Sprintf("n%d.example", i))
	}
	c.mu.Lock()
	n := len(c.named[h])
	c.mu.Unlock()
	if n > maxNamesPerHost {
		t.Fatalf("%d named endpoints kept, bound is %d", n, maxNamesPerHost)
	}
}
