package httpproxy

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

// TestOverloadShedsRequests: while the overload is active new requests get
// Envoy's 503 "envoy overloaded" with x-envoy-overloaded and never reach
// the upstream; once it clears they are served again.
func TestOverloadShedsRequests(t *testing.T) {
	var hits atomic.Int64
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	o := new(Overload)
	e := newProxyEnvOpts(t, simpleHCM("be"), Options{DebugHeaders: true, Overload: o}, h1Cluster("be", be.hostport()))
	c := e.dial()
	tests := []struct {
		overloaded bool
		status     int
		flag       string
	}{
		{false, 200, "-"},
		{true, 503, FlagOverload},
		{true, 503, FlagOverload},
		{false, 200, "-"},
	}
	for i, tt := range tests {
		o.Set(tt.overloaded)
		resp, body := c.roundTrip(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != tt.status || resp.Header.Get(HeaderResponseFlags) != tt.flag {
			t.Fatalf("request %d: %d %s, want %d %s", i, resp.StatusCode, resp.Header.Get(HeaderResponseFlags), tt.status, tt.flag)
		}
		if tt.overloaded && (body != BodyOverloaded || resp.Header.Get(HeaderOverloaded) != "true") {
			t.Fatalf("request %d: body %q, %s=%q", i, body, HeaderOverloaded, resp.Header.Get(HeaderOverloaded))
		}
	}
	if hits.Load() != 2 {
		t.Fatalf("upstream saw %d requests, want 2", hits.Load())
	}
	if o.Shed() != 2 {
		t.Fatalf("Shed = %d, want 2", o.Shed())
	}
}

// TestMaxRequestsPerConnectionH1: the Nth response on a connection carries
// Connection: close and the connection ends.
func TestMaxRequestsPerConnectionH1(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for _, max := range []uint32{1, 3} {
		hcm := simpleHCM("be")
		hcm.MaxRequestsPerConnection = max
		e := newProxyEnv(t, hcm, h1Cluster("be", be.hostport()))
		c := e.dial()
		for i := uint32(1); i <= max; i++ {
			resp, _ := c.roundTrip(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp.StatusCode != 200 || resp.Close != (i == max) {
				t.Fatalf("max %d, request %d: status %d, close %v", max, i, resp.StatusCode, resp.Close)
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := c.br.ReadByte(); err != io.EOF {
			t.Fatalf("max %d: connection still open after the last request: %v %v", max, n, err)
		}
	}
}

// TestMaxRequestsPerConnectionH2: HTTP/2 connections send GOAWAY after N
// streams, so 7 requests take 3 connections at N=3, all succeeding.
func TestMaxRequestsPerConnectionH2(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	hcm := &state.HTTPConnectionManager{Codec: state.CodecHTTP2, MaxRequestsPerConnection: 3}
	e := newH2Env(t, h2EnvOpts{hcm: hcm, clusters: []*state.Cluster{h1Cluster("be", be.hostport())}, rc: routeAll("be")})
	c, _ := h2cClient(t)
	for i := range 7 {
		resp, err := c.Get("http://" + e.addr + "/")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	if n := e.accept.Load(); n != 3 {
		t.Fatalf("%d downstream connections, want 3", n)
	}
}

// TestHCMMaxStreamDuration: the connection manager's max_stream_duration
// ends slow requests with 408; a route's own max_stream_duration (here 0:
// unbounded) takes precedence.
func TestHCMMaxStreamDuration(t *testing.T) {
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(300 * time.Millisecond)
	}))
	tests := []struct {
		name     string
		routeSet bool
		status   int
	}{
		{"hcm applies", false, 408},
		{"route overrides", true, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hcm := simpleHCM("be")
			hcm.MaxStreamDuration = 100 * time.Millisecond
			hcm.RouteConfig.VirtualHosts[0].Routes[0].Action.MaxStreamDurationSet = tt.routeSet
			e := newProxyEnv(t, hcm, h1Cluster("be", be.hostport()))
			resp, body := e.dial().roundTrip(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, body, tt.status)
			}
			if tt.status == 408 && !strings.Contains(body, BodyDurationTimeout) {
				t.Fatalf("body %q", body)
			}
		})
	}
}
