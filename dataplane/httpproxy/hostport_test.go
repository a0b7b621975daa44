package httpproxy

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

func TestHostWithoutPort(t *testing.T) {
	for _, tc := range []struct {
		in      string
		anyPort bool
		local   uint16
		want    string
	}{
		{"a.example:8080", true, 0, "a.example"},
		{"a.example:8080", false, 8080, "a.example"},
		{"a.example:8080", false, 80, "a.example:8080"},
		{"a.example", true, 0, "a.example"},
		{"a.example", false, 80, "a.example"},
		{"[::1]:80", true, 0, "[::1]"},
		{"[::1]:80", false, 80, "[::1]"},
		{"[::1]:80", false, 443, "[::1]:80"},
		{"[::1]", true, 0, "[::1]"},
		{"[fe80::1:2]", true, 0, "[fe80::1:2]"},
		{"10.0.0.1:443", true, 0, "10.0.0.1"},
		{"a.example:", true, 0, "a.example:"},
		{"a.example:http", true, 0, "a.example:http"},
		{"a.example:+80", true, 0, "a.example:+80"},
		{"a.example:99999999999", true, 0, "a.example:99999999999"},
		{"a.example:0", false, 0, "a.example"},
		{"", true, 0, ""},
	} {
		if got := hostWithoutPort(tc.in, tc.anyPort, tc.local); got != tc.want {
			t.Errorf("hostWithoutPort(%q, any=%v, local=%d) = %q, want %q", tc.in, tc.anyPort, tc.local, got, tc.want)
		}
	}
}

// TestStripHostPortCONNECT: CONNECT keeps the port its authority form needs.
func TestStripHostPortCONNECT(t *testing.T) {
	for _, method := range []string{"CONNECT", "GET"} {
		r := &h2Request{r: &http.Request{Method: method, Host: "a.example:443"}}
		stripHostPort(state.StripHostPortAny, r, nil)
		want := "a.example:443"
		if method != "CONNECT" {
			want = "a.example"
		}
		if got := r.Authority(); got != want {
			t.Errorf("%s: authority %q, want %q", method, got, want)
		}
	}
}

// stripHCM routes only the virtual host "a.example" (port-exact matching)
// to cluster be.
func stripHCM(mode state.StripHostPort, codec state.CodecType) *state.HTTPConnectionManager {
	h := simpleHCM("be")
	h.Codec = codec
	h.RouteConfig.VirtualHosts[0].Domains = []string{"a.example"}
	h.StripHostPort = mode
	return h
}

// hostBackend answers with the Host it received.
func hostBackend(t *testing.T) *backend {
	return newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Host)
	}))
}

type stripCase struct {
	name string
	mode state.StripHostPort
	host string
	code int
	seen string
}

// stripCases are the cases for a proxy listening on port local.
func stripCases(local string) []stripCase {
	other := "8080"
	if local == other {
		other = "8081"
	}
	return []stripCase{
		{"none keeps port", state.StripHostPortNone, "a.example:" + other, 404, ""},
		{"any strips", state.StripHostPortAny, "a.example:" + other, 200, "a.example"},
		{"any without port", state.StripHostPortAny, "a.example", 200, "a.example"},
		{"matching strips listener port", state.StripHostPortMatching, "a.example:" + local, 200, "a.example"},
		{"matching keeps other port", state.StripHostPortMatching, "a.example:" + other, 404, ""},
	}
}

func TestStripHostPortH1(t *testing.T) {
	be := hostBackend(t)
	for _, mode := range []state.StripHostPort{state.StripHostPortNone, state.StripHostPortAny, state.StripHostPortMatching} {
		e := newProxyEnv(t, stripHCM(mode, state.CodecHTTP1), h1Cluster("be", be.hostport()))
		_, local, err := net.SplitHostPort(e.addr)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range stripCases(local) {
			if tc.mode != mode {
				continue
			}
			for _, target := range []string{"/", "http://" + tc.host + "/"} {
				resp, body := e.dial().roundTrip(t, "GET "+target+" HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n")
				if resp.StatusCode != tc.code || (tc.code == 200 && body != tc.seen) {
					t.Errorf("%s: GET %s Host %s: %d %q, want %d %q", tc.name, target, tc.host, resp.StatusCode, body, tc.code, tc.seen)
				}
			}
		}
	}
}

func TestStripHostPortH2(t *testing.T) {
	be := hostBackend(t)
	for _, mode := range []state.StripHostPort{state.StripHostPortNone, state.StripHostPortAny, state.StripHostPortMatching} {
		hcm := stripHCM(mode, state.CodecHTTP2)
		e := newH2Env(t, h2EnvOpts{hcm: hcm, rc: hcm.RouteConfig, clusters: []*state.Cluster{h1Cluster("be", be.hostport())}})
		_, local, err := net.SplitHostPort(e.addr)
		if err != nil {
			t.Fatal(err)
		}
		client, _ := h2cClient(t)
		client.Timeout = 10 * time.Second
		for _, tc := range stripCases(local) {
			if tc.mode != mode {
				continue
			}
			req, err := http.NewRequest("GET", "http://"+e.addr+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Host = tc.host
			resp, err := client.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Fatalf("%s: downstream spoke HTTP/%d", tc.name, resp.ProtoMajor)
			}
			if resp.StatusCode != tc.code || (tc.code == 200 && string(b) != tc.seen) {
				t.Errorf("%s: Host %s: %d %q, want %d %q", tc.name, tc.host, resp.StatusCode, b, tc.code, tc.seen)
			}
		}
	}
}

// TestStripHostPortH1NoAlloc: stripping an HTTP/1.1 authority reslices the
// parsed head instead of copying it.
func TestStripHostPortH1NoAlloc(t *testing.T) {
	var r h1Request
	if err := r.parse([]byte("GET / HTTP/1.1\r\nHost: a.example:8080\r\n\r\n"), 100); err != nil {
		t.Fatal(err)
	}
	orig := r.authority
	allocs := testing.AllocsPerRun(100, func() {
		r.authority = orig
		stripHostPort(state.StripHostPortAny, &r, nil)
	})
	if got := r.Authority(); got != "a.example" {
		t.Fatalf("authority %q, want a.example", got)
	}
	if allocs != 0 {
		t.Fatalf("%v allocs per strip, want 0", allocs)
	}
}
