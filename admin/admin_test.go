package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/state"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testStore() *state.Store {
	st := state.NewStore()
	st.Update(func(s *state.Snapshot) bool {
		s.Listeners["in"] = &state.Listener{
			Name:    "in",
			Address: netip.MustParseAddrPort("127.0.0.1:15006"),
			FilterChains: []*state.FilterChain{{
				TLS:      &state.DownstreamTLS{CertChainPEM: []byte("CERT"), KeyPEM: []byte("PRIVATE KEY")},
				TCPProxy: &state.TCPProxy{Cluster: "backend"},
			}},
		}
		s.Clusters["backend"] = &state.Cluster{
			Name: "backend", Type: state.ClusterStatic,
			LoadAssignment: &state.ClusterLoadAssignment{ClusterName: "backend", Localities: []state.LocalityEndpoints{{
				Locality:  state.Locality{Zone: "z1"},
				Endpoints: []state.Endpoint{{Address: "127.0.0.1:8080", Weight: 3, Health: state.HealthHealthy}},
			}}},
		}
		s.Versions[state.TypeListener] = "7"
		return true
	})
	return st
}

func startAdmin(t *testing.T, deps Deps) string {
	t.Helper()
	s, err := New("127.0.0.1:0", deps)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return "http://" + s.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReady(t *testing.T) {
	var ready atomic.Bool
	base := startAdmin(t, Deps{Ready: func() error {
		if !ready.Load() {
			return errors.New("xDS not synced")
		}
		return nil
	}})
	for _, path := range []string{"/ready", "/healthz/ready"} {
		ready.Store(false)
		code, body := get(t, base+path)
		if code != 503 || !strings.Contains(body, "xDS not synced") {
			t.Errorf("%s before ready = %d %q, want 503 with the reason", path, code, body)
		}
		ready.Store(true)
		code, body = get(t, base+path)
		if code != 200 || body != "LIVE\n" {
			t.Errorf("%s when ready = %d %q, want 200 LIVE", path, code, body)
		}
	}
}

func TestNilReadyIsNeverReady(t *testing.T) {
	base := startAdmin(t, Deps{})
	if code, _ := get(t, base+"/ready"); code != 503 {
		t.Errorf("/ready = %d, want 503", code)
	}
}

func TestListeners(t *testing.T) {
	base := startAdmin(t, Deps{Listeners: func() []ListenerStatus {
		return []ListenerStatus{
			{Name: "z", Addr: "127.0.0.1:40000"},
			{Name: "a", Addr: "127.0.0.1:15001"},
			{Name: "bad", Error: "address in use"},
		}
	}})
	_, body := get(t, base+"/listeners")
	want := "a::127.0.0.1:15001\nbad::error::address in use\nz::127.0.0.1:40000\n"
	if body != want {
		t.Errorf("/listeners = %q, want %q", body, want)
	}
}

func TestClusters(t *testing.T) {
	st := testStore()
	mgr := upstream.NewManager(st, nil)
	defer mgr.Close()
	base := startAdmin(t, Deps{Store: st, Clusters: mgr})
	_, body := get(t, base+"/clusters")
	for _, want := range []string{
		"backend::type::STATIC\n",
		"backend::127.0.0.1:8080::health::HEALTHY\n",
		"backend::127.0.0.1:8080::weight::3\n",
		"backend::127.0.0.1:8080::rq_active::0\n",
		"backend::127.0.0.1:8080::locality::/z1/\n",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/clusters lacks %q:\n%s", want, body)
		}
	}
}

func TestConfigDump(t *testing.T) {
	base := startAdmin(t, Deps{Store: testStore(), XDSStatus: func() any { return map[string]string{"state": "connected"} }})
	code, body := get(t, base+"/config_dump")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	if strings.Contains(body, "PRIVATE KEY") || strings.Contains(body, "UFJJVkFURSBLRVk=") {
		t.Errorf("config_dump leaks the private key:\n%s", body)
	}
	var dump struct {
		Listeners typeDump          `json:"listeners"`
		Clusters  typeDump          `json:"clusters"`
		XDS       map[string]string `json:"xds"`
	}
	if err := json.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatal(err)
	}
	if dump.Listeners.Version != "7" || len(dump.Listeners.Names) != 1 || dump.Listeners.Names[0] != "in" {
		t.Errorf("listeners = %+v", dump.Listeners)
	}
	if len(dump.Clusters.Names) != 1 || dump.Clusters.Names[0] != "backend" {
		t.Errorf("clusters = %+v", dump.Clusters)
	}
	if dump.XDS["state"] != "connected" {
		t.Errorf("xds = %v", dump.XDS)
	}
	if !strings.Contains(body, `"KeyPEM": "[redacted]"`) {
		t.Errorf("key not shown as redacted")
	}
}

func TestServerInfo(t *testing.T) {
	base := startAdmin(t, Deps{Info: ServerInfo{Version: "1.2.3", NodeID: "sidecar~1"}, Ready: func() error { return nil }})
	_, body := get(t, base+"/server_info")
	var info map[string]any
	if err := json.Unmarshal([]byte(body), &info); err != nil {
		t.Fatal(err)
	}
	if info["version"] != "1.2.3" || info["node_id"] != "sidecar~1" || info["state"] != "LIVE" || info["go_version"] == "" {
		t.Errorf("server_info = %v", info)
	}
}

func TestNonLoopbackRefused(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "10.1.2.3:15000", "nohost"} {
		if s, err := New(addr, Deps{}); err == nil {
			_ = s.Shutdown(context.Background())
			t.Errorf("New(%q) succeeded, want refusal", addr)
		}
	}
}
