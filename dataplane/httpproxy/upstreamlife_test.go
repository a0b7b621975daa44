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

// lifeProtos are the upstream codecs (and pools) under test.
var lifeProtos = map[string]state.UpstreamProtocol{"http1": state.UpstreamHTTP1, "http2": state.UpstreamHTTP2}

// lifeGet sends one GET through the proxy and returns status, flags, body
// and the body read error.
func lifeGet(t *testing.T, c *http.Client, url string) (int, string, string, error) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, rerr := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get(HeaderResponseFlags), string(b), rerr
}

// TestUpstreamMaxConnectionDuration: a pooled upstream connection older
// than the cluster's max_connection_duration takes no new request; one
// carrying a request when it ages finishes that request and then closes
// (HTTP/2: the new stream goes to a new connection while the old stream
// completes).
func TestUpstreamMaxConnectionDuration(t *testing.T) {
	const age = 300 * time.Millisecond
	for name, proto := range lifeProtos {
		t.Run(name, func(t *testing.T) {
			entered := make(chan struct{}, 1)
			release := make(chan struct{})
			be := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					entered <- struct{}{}
					<-release
				}
				io.WriteString(w, "ok")
			}))
			cl := staticCluster("be", proto, be.addr)
			cl.UpstreamMaxConnectionDuration = age
			hcm := simpleHCM("be")
			e := newProxyEnv(t, hcm, cl)
			client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
			t.Cleanup(client.CloseIdleConnections)
			url := "http://" + e.addr

			get := func(path string) {
				t.Helper()
				if st, fl, body, err := lifeGet(t, client, url+path); st != 200 || body != "ok" || err != nil {
					t.Fatalf("GET %s: %d %q flags %q, %v", path, st, body, fl, err)
				}
			}
			// Young: reused.
			get("/")
			get("/")
			if n := be.conns.Load(); n != 1 {
				t.Fatalf("backend saw %d connections for two requests, want 1", n)
			}
			// Old and idle: replaced, and closed.
			time.Sleep(age + 50*time.Millisecond)
			get("/")
			if n := be.conns.Load(); n != 2 {
				t.Fatalf("backend saw %d connections, want 2 (the aged one not reused)", n)
			}
			waitFor(t, "the aged idle connection to close", func() bool { return be.active.Load() == 1 })

			// Ages while a request is in flight.
			slow := make(chan error, 1)
			go func() {
				resp, err := client.Get(url + "/slow")
				if err == nil {
					var b []byte
					b, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					if err == nil && (resp.StatusCode != 200 || string(b) != "ok") {
						err = &statusError{resp.StatusCode, string(b)}
					}
				}
				slow <- err
			}()
			<-entered
			time.Sleep(age + 50*time.Millisecond)
			get("/")
			if n := be.conns.Load(); n != 3 {
				t.Fatalf("backend saw %d connections, want 3 (a new one beside the aged busy one)", n)
			}
			if n := be.active.Load(); n != 2 {
				t.Fatalf("%d backend connections open, want 2: the aged one must carry its request to the end", n)
			}
			close(release)
			if err := <-slow; err != nil {
				t.Fatalf("request in flight on the aged connection: %v", err)
			}
			waitFor(t, "the aged connection to close after its request", func() bool { return be.active.Load() == 1 })
			get("/")
			if n := be.conns.Load(); n != 3 {
				t.Fatalf("backend saw %d connections, want 3 (the young one reused)", n)
			}
		})
	}
}

type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return http.StatusText(e.status) + ": " + e.body }

// TestUpstreamMaxStreamDuration: the cluster's max_stream_duration resets
// an upstream request that runs longer: 504 UMSDR before response headers,
// a cut body after them, a retry when the policy retries resets.
func TestUpstreamMaxStreamDuration(t *testing.T) {
	const limit = 150 * time.Millisecond
	tests := []struct {
		name     string
		path     string
		retry    bool
		status   int
		flags    string
		body     string
		bodyErr  bool
		attempts int64
	}{
		{name: "fast", path: "/fast", status: 200, body: "ok", attempts: 1},
		{name: "no headers in time", path: "/stall", status: 504, flags: FlagUpstreamMaxStreamDuration, body: BodyUpstreamMaxStreamDuration, attempts: 1},
		{name: "body cut", path: "/stall-body", status: 200, bodyErr: true, attempts: 1},
		{name: "retried as reset", path: "/stall-first", retry: true, status: 200, body: "ok", attempts: 2},
	}
	for name, proto := range lifeProtos {
		for _, tc := range tests {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				be, calls := stallBackend(t)
				cl := staticCluster("be", proto, be.addr)
				cl.UpstreamMaxStreamDuration = limit
				hcm := simpleHCM("be")
				if tc.retry {
					hcm.RouteConfig.VirtualHosts[0].Routes[0].Action.RetryPolicy = &state.RetryPolicy{
						RetryOn: state.RetryReset, NumRetries: 1, BackOffBase: time.Millisecond,
					}
				}
				e := newProxyEnv(t, hcm, cl)
				client := &http.Client{Transport: &http.Transport{}, Timeout: 10 * time.Second}
				t.Cleanup(client.CloseIdleConnections)
				start := time.Now()
				st, flags, body, err := lifeGet(t, client, "http://"+e.addr+tc.path)
				if st != tc.status {
					t.Fatalf("status %d (flags %q, body %q), want %d", st, flags, body, tc.status)
				}
				if tc.bodyErr {
					if err == nil {
						t.Fatalf("body %q read whole; want it cut at max_stream_duration", body)
					}
				} else if err != nil || body != tc.body {
					t.Fatalf("body %q, %v; want %q", body, err, tc.body)
				}
				if tc.status == 504 && !strings.Contains(flags, tc.flags) {
					t.Fatalf("flags %q, want %q", flags, tc.flags)
				}
				if tc.status != 200 || tc.bodyErr {
					if d := time.Since(start); d < limit || d > limit+2*time.Second {
						t.Fatalf("ended after %v, want about %v", d, limit)
					}
				}
				if n := calls.Load(); n != tc.attempts {
					t.Fatalf("%d upstream attempts, want %d", n, tc.attempts)
				}
			})
		}
	}
}

// stallBackend answers /fast at once, never answers /stall (nor the first
// /stall-first), and sends part of /stall-body's body, then stalls. calls
// counts the requests it got.
func stallBackend(t *testing.T) (*h2Backend, *atomic.Int64) {
	var calls atomic.Int64
	stop := make(chan struct{})
	be := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		stall := func() {
			select {
			case <-stop:
			case <-r.Context().Done():
			}
		}
		switch {
		case r.URL.Path == "/stall", r.URL.Path == "/stall-first" && n == 1:
			stall()
			return
		case r.URL.Path == "/stall-body":
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "part")
			w.(http.Flusher).Flush()
			stall()
			return
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(func() { close(stop) })
	return be, &calls
}

// TestUpstreamMaxStreamDurationH2Downstream: the same limit on the path
// HTTP/2 clients take (one attempt context per upstream request).
func TestUpstreamMaxStreamDurationH2Downstream(t *testing.T) {
	h2LeakCheck(t)
	const limit = 150 * time.Millisecond
	for name, proto := range lifeProtos {
		t.Run(name, func(t *testing.T) {
			be, _ := stallBackend(t)
			cl := staticCluster("be", proto, be.addr)
			cl.UpstreamMaxStreamDuration = limit
			e := newH2Env(t, h2EnvOpts{clusters: []*state.Cluster{cl}, rc: routeAll("be")})
			client, _ := h2cClient(t)
			st, flags, body, _ := lifeGet(t, client, "http://"+e.addr+"/stall")
			if st != 504 || flags != FlagUpstreamMaxStreamDuration || body != BodyUpstreamMaxStreamDuration {
				t.Fatalf("stalled head: %d %q %q, want 504 %s", st, flags, body, FlagUpstreamMaxStreamDuration)
			}
			st, _, body, err := lifeGet(t, client, "http://"+e.addr+"/stall-body")
			if st != 200 || err == nil {
				t.Fatalf("stalled body: %d %q, %v; want the stream reset", st, body, err)
			}
			if st, _, body, err := lifeGet(t, client, "http://"+e.addr+"/fast"); st != 200 || body != "ok" || err != nil {
				t.Fatalf("fast: %d %q %v", st, body, err)
			}
		})
	}
}
