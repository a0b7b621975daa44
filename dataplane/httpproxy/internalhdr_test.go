package httpproxy

import (
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

// serveAs serves e's proxy on a second loopback listener whose
// connections claim remote as their downstream address, to play clients
// the test cannot dial from.
func serveAs(t *testing.T, e *proxyEnv, hcm *state.HTTPConnectionManager, remote netip.AddrPort) string {
	return serveProxy(t, e.proxy, hcm, func(c net.Conn) *ConnInfo {
		return &ConnInfo{Remote: remote, Local: netip.MustParseAddrPort(c.LocalAddr().String())}
	})
}

// TestInternalOnlyHeaders: a route configuration's internal_only_headers
// reach the upstream from internal clients (RFC 1918, loopback, ULA) and
// are removed, before routing, from external ones, over HTTP/1.1, HTTP/2
// and the in-process path; other headers pass either way.
func TestInternalOnlyHeaders(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("got-secret", r.Header.Get("X-Internal-Secret"))
		w.Header().Set("got-other", r.Header.Get("X-Other"))
	}))
	hcm := simpleHCM("be")
	rc := hcm.RouteConfig
	rc.InternalOnlyHeaders = []string{"x-internal-secret"}
	rc.InternalOnlyHeaderKeys = []string{"X-Internal-Secret"}
	// A route on the header must not see it from outside.
	vh := rc.VirtualHosts[0]
	vh.Routes = append([]*state.Route{{Name: "secret",
		Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true,
			Headers: []state.HeaderMatcher{{Name: "x-internal-secret", Kind: state.HeaderPresent, Present: true}}},
		Action:  &state.RouteAction{Cluster: "be", Timeout: 5 * time.Second},
		Headers: state.HeaderMutation{ResponseAdd: []state.HeaderValueOption{{Key: "route", Value: "secret"}}}}}, vh.Routes...)
	e := newProxyEnv(t, hcm, h1Cluster("be", be.hostport()))

	codecs := []struct {
		name string
		do   func(t *testing.T, remote netip.AddrPort, req *http.Request) *http.Response
	}{
		{"http1", func(t *testing.T, remote netip.AddrPort, req *http.Request) *http.Response {
			addr := serveAs(t, e, hcm, remote)
			req.URL.Host = addr
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}},
		{"http2", func(t *testing.T, remote netip.AddrPort, req *http.Request) *http.Response {
			addr := serveAs(t, e, hcm, remote)
			req.URL.Host = addr
			_, tr := h2cClient(t)
			defer tr.CloseIdleConnections()
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}},
		{"inproc", func(t *testing.T, remote netip.AddrPort, req *http.Request) *http.Response {
			resp, err := e.proxy.RoundTrip(req, hcm, &ConnInfo{Remote: remote, Local: remote})
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}},
	}
	remotes := []struct {
		addr     string
		internal bool
	}{
		{"10.1.2.3:4000", true},
		{"192.168.7.7:4000", true},
		{"127.0.0.1:4000", true},
		{"[fd00::1]:4000", true},
		{"203.0.113.9:4000", false},
		{"[2001:db8::1]:4000", false},
	}
	for _, c := range codecs {
		for _, r := range remotes {
			t.Run(c.name+"/"+r.addr, func(t *testing.T) {
				req, _ := http.NewRequest("GET", "http://a/x", nil)
				req.Host = "a"
				req.Header.Set("X-Internal-Secret", "s3")
				req.Header.Set("X-Other", "o")
				resp := c.do(t, netip.MustParseAddrPort(r.addr), req)
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				wantSecret, wantRoute := "", ""
				if r.internal {
					wantSecret, wantRoute = "s3", "secret"
				}
				if resp.StatusCode != 200 || resp.Header.Get("got-secret") != wantSecret ||
					resp.Header.Get("got-other") != "o" || resp.Header.Get("route") != wantRoute {
					t.Fatalf("status %d, upstream saw secret %q other %q, route %q; want secret %q other \"o\" route %q",
						resp.StatusCode, resp.Header.Get("got-secret"), resp.Header.Get("got-other"),
						resp.Header.Get("route"), wantSecret, wantRoute)
				}
			})
		}
	}
}

// TestInternalOnlyHeadersEmpty: without the list nothing is removed, even
// for an external client.
func TestInternalOnlyHeadersEmpty(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Header.Get("X-Internal-Secret"))
	}))
	hcm := simpleHCM("be")
	e := newProxyEnv(t, hcm, h1Cluster("be", be.hostport()))
	req, _ := http.NewRequest("GET", "http://a/", nil)
	req.Header.Set("X-Internal-Secret", "s3")
	resp, err := e.proxy.RoundTrip(req, hcm, &ConnInfo{Remote: netip.MustParseAddrPort("203.0.113.9:1")})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(b)) != "s3" {
		t.Fatalf("upstream saw %q, want s3", b)
	}
}
