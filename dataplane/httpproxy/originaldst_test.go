package httpproxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/state"
	"go.uber.org/goleak"
)

// origDstEnv is a proxy on a loopback listener whose connections claim
// origDst as their original destination, as a capturing listener's do.
func newOrigDstEnv(t *testing.T, origDst netip.AddrPort, cluster *state.Cluster) string {
	t.Helper()
	opt := goleak.IgnoreCurrent()
	store := state.NewStore()
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters[cluster.Name] = cluster
		return true
	})
	mgr := upstream.NewManager(store, nil)
	p := New(store, mgr, Options{DebugHeaders: true}, nil)
	hcm := simpleHCM(cluster.Name)
	t.Cleanup(func() { // after serveProxy's cleanup
		mgr.Close()
		goleak.VerifyNone(t, opt)
	})
	return serveProxy(t, p, hcm, func(c net.Conn) *ConnInfo {
		return &ConnInfo{
			Remote:      netip.MustParseAddrPort(c.RemoteAddr().String()),
			Local:       netip.MustParseAddrPort(c.LocalAddr().String()),
			OriginalDst: origDst,
		}
	})
}

// namedBackend answers every request with its name.
func namedBackend(t *testing.T, name string) *backend {
	return newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", name, r.Proto)
	}))
}

func TestOriginalDstHTTP(t *testing.T) {
	a := namedBackend(t, "a")
	b := namedBackend(t, "b")
	aAddr := netip.MustParseAddrPort(a.hostport())
	passthrough := func(header string) *state.Cluster {
		return &state.Cluster{Name: "passthrough", Type: state.ClusterOriginalDst,
			ConnectTimeout: time.Second, OriginalDstHeader: header}
	}
	tests := []struct {
		name    string
		origDst netip.AddrPort
		cluster *state.Cluster
		header  string // x-envoy-original-dst-host value; "" sends none
		want    int
		body    string // prefix of the response body
		flags   string
	}{
		{name: "connection original destination", origDst: aAddr, cluster: passthrough(""), want: 200, body: "a"},
		{name: "header ignored when not configured", origDst: aAddr, cluster: passthrough(""), header: b.hostport(), want: 200, body: "a"},
		{name: "header picks the backend", origDst: aAddr, cluster: passthrough("x-envoy-original-dst-host"), header: b.hostport(), want: 200, body: "b"},
		{name: "header missing", origDst: aAddr, cluster: passthrough("x-envoy-original-dst-host"), want: 503, body: BodyNoHealthyUpstream, flags: FlagNoHealthyUpstream},
		{name: "header not ip:port", origDst: aAddr, cluster: passthrough("x-envoy-original-dst-host"), header: "example.com:80", want: 503, body: BodyNoHealthyUpstream, flags: FlagNoHealthyUpstream},
		{name: "no original destination", cluster: passthrough(""), want: 503, body: BodyNoHealthyUpstream, flags: FlagNoHealthyUpstream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr := newOrigDstEnv(t, tt.origDst, tt.cluster)
			h2c, _ := h2cClient(t)
			tr := &http.Transport{}
			t.Cleanup(tr.CloseIdleConnections)
			h1 := &http.Client{Transport: tr, Timeout: 10 * time.Second}
			for _, cl := range []struct {
				proto string
				c     *http.Client
			}{{"HTTP/1.1", h1}, {"HTTP/2.0", h2c}} {
				// Two requests: the second reuses the host and its pool.
				for i := range 2 {
					req, err := http.NewRequest("GET", "http://"+addr+"/x", nil)
					if err != nil {
						t.Fatal(err)
					}
					if tt.header != "" {
						req.Header.Set("x-envoy-original-dst-host", tt.header)
					}
					resp, err := cl.c.Do(req)
					if err != nil {
						t.Fatalf("%s request %d: %v", cl.proto, i, err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != tt.want || !strings.HasPrefix(string(body), tt.body) {
						t.Errorf("%s request %d: %d %q, want %d %q", cl.proto, i, resp.StatusCode, body, tt.want, tt.body)
					}
					if resp.Proto != cl.proto {
						t.Errorf("downstream proto %s, want %s", resp.Proto, cl.proto)
					}
					if f := resp.Header.Get("x-meshlet-response-flags"); tt.flags != "" && f != tt.flags {
						t.Errorf("%s flags %q, want %q", cl.proto, f, tt.flags)
					}
				}
			}
		})
	}
	if n := a.conns.Load() + b.conns.Load(); n == 0 {
		t.Error("no backend connection was made")
	}
}
