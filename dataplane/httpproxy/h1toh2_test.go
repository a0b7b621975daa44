package httpproxy

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

// newH2cServer serves h on a loopback h2c listener.
func newH2cServer(t *testing.T, h http.Handler) string {
	t.Helper()
	srv := &http.Server{Protocols: new(http.Protocols), Handler: h}
	srv.Protocols.SetUnencryptedHTTP2(true)
	srv.Protocols.SetHTTP1(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// policyHCM routes everything to cluster with the given action edits.
func policyHCM(cluster string, edit func(vh *state.VirtualHost, a *state.RouteAction)) *state.HTTPConnectionManager {
	hcm := simpleHCM(cluster)
	vh := hcm.RouteConfig.VirtualHosts[0]
	edit(vh, vh.Routes[0].Action)
	return hcm
}

// HTTP/1.1 clients to an HTTP/2 upstream get the route's retry policy,
// per-try timeouts, circuit breaking and attempt counting, as on the
// other paths.
func TestH1ToH2RetriesAndBreaker(t *testing.T) {
	retry5xx := &state.RetryPolicy{RetryOn: state.Retry5xx, NumRetries: 2, BackOffBase: time.Millisecond, BackOffMax: 2 * time.Millisecond}
	tests := []struct {
		name      string
		fail      func(n int64, r *http.Request) (status int, delay time.Duration)
		policy    *state.RetryPolicy
		breaker   *state.CircuitBreakers
		body      string
		wantCode  int
		wantFlags string
		wantHits  int64
		wantCount string // x-envoy-attempt-count on the response
	}{
		{name: "503 then 200 is retried",
			fail: func(n int64, _ *http.Request) (int, time.Duration) {
				if n == 1 {
					return 503, 0
				}
				return 200, 0
			},
			policy: retry5xx, wantCode: 200, wantFlags: "-", wantHits: 2, wantCount: "2"},
		{name: "POST body replayed on retry",
			fail: func(n int64, r *http.Request) (int, time.Duration) {
				if n == 1 {
					return 503, 0
				}
				return 200, 0
			},
			policy: retry5xx, body: "payload", wantCode: 200, wantFlags: "-", wantHits: 2, wantCount: "2"},
		{name: "retries used up gives URX",
			fail:   func(int64, *http.Request) (int, time.Duration) { return 503, 0 },
			policy: retry5xx, wantCode: 503, wantFlags: "URX", wantHits: 3, wantCount: "3"},
		{name: "per-try timeout retried",
			fail: func(n int64, _ *http.Request) (int, time.Duration) {
				if n == 1 {
					return 200, time.Second
				}
				return 200, 0
			},
			policy: &state.RetryPolicy{RetryOn: state.Retry5xx, NumRetries: 1, PerTryTimeout: 100 * time.Millisecond,
				BackOffBase: time.Millisecond, BackOffMax: time.Millisecond},
			wantCode: 200, wantFlags: "-", wantHits: 2, wantCount: "2"},
		{name: "no policy: one attempt",
			fail:     func(int64, *http.Request) (int, time.Duration) { return 503, 0 },
			wantCode: 503, wantFlags: "-", wantHits: 1, wantCount: "1"},
		{name: "requests breaker full gives UO",
			fail:     func(int64, *http.Request) (int, time.Duration) { return 200, 0 },
			policy:   retry5xx,
			breaker:  &state.CircuitBreakers{MaxConnections: 10, MaxPendingRequests: 10, MaxRequests: 0, MaxRetries: 3},
			wantCode: 503, wantFlags: "UO", wantHits: 0},
		{name: "retry breaker full: no retry, UO",
			fail:     func(int64, *http.Request) (int, time.Duration) { return 503, 0 },
			policy:   retry5xx,
			breaker:  &state.CircuitBreakers{MaxConnections: 10, MaxPendingRequests: 10, MaxRequests: 10, MaxRetries: 0},
			wantCode: 503, wantFlags: "UO", wantHits: 1, wantCount: "1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int64
			var badBody atomic.Bool
			var lastCount atomic.Value
			addr := newH2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				if string(b) != tc.body {
					badBody.Store(true)
				}
				lastCount.Store(r.Header.Get("X-Envoy-Attempt-Count"))
				status, delay := tc.fail(hits.Add(1), r)
				if delay > 0 {
					select {
					case <-time.After(delay):
					case <-r.Context().Done():
						return
					}
				}
				w.WriteHeader(status)
			}))
			cl := h1Cluster("h2", addr)
			cl.Protocol = state.UpstreamHTTP2
			cl.CircuitBreakers = tc.breaker
			hcm := policyHCM("h2", func(vh *state.VirtualHost, a *state.RouteAction) {
				vh.IncludeAttemptCount = true
				vh.IncludeAttemptCountInResponse = true
				a.RetryPolicy = tc.policy
			})
			e := newProxyEnv(t, hcm, cl)
			c := e.dial()
			raw := "GET /x HTTP/1.1\r\nHost: h2.example\r\n\r\n"
			if tc.body != "" {
				raw = "POST /x HTTP/1.1\r\nHost: h2.example\r\nContent-Length: " + strconv.Itoa(len(tc.body)) + "\r\n\r\n" + tc.body
			}
			resp, _ := c.roundTrip(t, raw)
			if resp.StatusCode != tc.wantCode || resp.Header.Get(HeaderResponseFlags) != tc.wantFlags {
				t.Fatalf("got %d flags %q, want %d %q", resp.StatusCode, resp.Header.Get(HeaderResponseFlags), tc.wantCode, tc.wantFlags)
			}
			if got := hits.Load(); got != tc.wantHits {
				t.Fatalf("backend saw %d attempts, want %d", got, tc.wantHits)
			}
			if tc.wantCount != "" {
				if got := resp.Header.Get("X-Envoy-Attempt-Count"); got != tc.wantCount {
					t.Fatalf("response attempt count %q, want %q", got, tc.wantCount)
				}
				if got, _ := lastCount.Load().(string); got != tc.wantCount {
					t.Fatalf("upstream saw attempt count %q, want %q", got, tc.wantCount)
				}
			}
			if badBody.Load() {
				t.Fatal("an attempt arrived without the whole request body")
			}
			if tc.wantCode == 200 {
				// The connection stays usable.
				resp, _ = c.roundTrip(t, "GET /y HTTP/1.1\r\nHost: h2.example\r\n\r\n")
				if resp.StatusCode == 0 {
					t.Fatal("no second response")
				}
			}
		})
	}
}

// The route timeout and max_stream_duration apply to HTTP/1.1 clients of
// an HTTP/2 upstream: 504 UT, and 408 for the stream duration.
func TestH1ToH2Timeouts(t *testing.T) {
	addr := newH2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}))
	tests := []struct {
		name     string
		edit     func(a *state.RouteAction)
		wantCode int
		wantFlag string
	}{
		{"route timeout", func(a *state.RouteAction) { a.Timeout = 100 * time.Millisecond }, 504, "UT"},
		{"max stream duration", func(a *state.RouteAction) {
			a.Timeout = 0
			a.MaxStreamDuration = 100 * time.Millisecond
			a.MaxStreamDurationSet = true
		}, 408, "-"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl := h1Cluster("h2", addr)
			cl.Protocol = state.UpstreamHTTP2
			e := newProxyEnv(t, policyHCM("h2", func(_ *state.VirtualHost, a *state.RouteAction) { tc.edit(a) }), cl)
			start := time.Now()
			resp, _ := e.dial().roundTrip(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp.StatusCode != tc.wantCode || resp.Header.Get(HeaderResponseFlags) != tc.wantFlag {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, resp.Header.Get(HeaderResponseFlags), tc.wantCode, tc.wantFlag)
			}
			if took := time.Since(start); took > time.Second {
				t.Fatalf("took %v", took)
			}
		})
	}
}

// Mirrors work for HTTP/1.1 clients of an HTTP/2 upstream: the shadow
// gets the body and the -shadow authority.
func TestH1ToH2Mirror(t *testing.T) {
	primary := newH2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	type seen struct{ host, body string }
	got := make(chan seen, 4)
	shadow := newH2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Host, string(b)}
	}))
	cl := h1Cluster("h2", primary)
	cl.Protocol = state.UpstreamHTTP2
	sh := h1Cluster("shadow", shadow)
	sh.Protocol = state.UpstreamHTTP2
	hcm := policyHCM("h2", func(_ *state.VirtualHost, a *state.RouteAction) {
		a.MirrorPolicies = []state.MirrorPolicy{{Cluster: "shadow"}}
	})
	e := newProxyEnv(t, hcm, cl, sh)
	resp, _ := e.dial().roundTrip(t, "POST /m HTTP/1.1\r\nHost: svc.example\r\nContent-Length: 4\r\n\r\nping")
	if resp.StatusCode != 200 {
		t.Fatalf("primary: %d", resp.StatusCode)
	}
	select {
	case s := <-got:
		if s.host != "svc.example-shadow" || s.body != "ping" {
			t.Fatalf("shadow saw %+v", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no mirrored request")
	}
	e.proxy.mirrorWG.Wait()
}

// A client that closes its connection while the upstream is still
// working cancels the upstream request at once (DC), on both upstream
// protocols, well before the old one-second poll.
func TestH1DownstreamDisconnectCancelsUpstream(t *testing.T) {
	for _, proto := range []state.UpstreamProtocol{state.UpstreamHTTP1, state.UpstreamHTTP2} {
		t.Run(strings.ReplaceAll(protoLabel(proto), "/", ""), func(t *testing.T) {
			cancelled := make(chan time.Time, 1)
			started := make(chan struct{}, 1)
			addr := newH2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				select {
				case <-r.Context().Done():
					cancelled <- time.Now()
				case <-time.After(5 * time.Second):
				}
			}))
			cl := h1Cluster("be", addr)
			cl.Protocol = proto
			e := newProxyEnv(t, simpleHCM("be"), cl)
			c := e.dial()
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			<-started
			time.Sleep(50 * time.Millisecond) // past dcGrace: the watcher runs
			closed := time.Now()
			c.Close()
			select {
			case at := <-cancelled:
				if d := at.Sub(closed); d > 400*time.Millisecond {
					t.Fatalf("upstream cancelled %v after the client left", d)
				}
			case <-time.After(3 * time.Second):
				t.Fatal("upstream request not cancelled")
			}
		})
	}
}

func protoLabel(p state.UpstreamProtocol) string {
	if p == state.UpstreamHTTP2 {
		return "HTTP/2"
	}
	return "HTTP/1.1"
}

// A slow response (past dcGrace) to a client that stays is answered
// normally, and pipelined requests still work: the watcher never eats
// bytes.
func TestH1SlowResponseWithWatcher(t *testing.T) {
	addr := newH2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(30 * time.Millisecond)
		io.WriteString(w, r.URL.Path)
	}))
	for _, proto := range []state.UpstreamProtocol{state.UpstreamHTTP1, state.UpstreamHTTP2} {
		t.Run(strings.ReplaceAll(protoLabel(proto), "/", ""), func(t *testing.T) {
			cl := h1Cluster("be", addr)
			cl.Protocol = proto
			e := newProxyEnv(t, simpleHCM("be"), cl)
			c := e.dial()
			if _, err := io.WriteString(c, "GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"/one", "/two"} {
				resp, body := c.read(t, "GET")
				if resp.StatusCode != 200 || body != want {
					t.Fatalf("got %d %q, want 200 %q", resp.StatusCode, body, want)
				}
			}
			resp, body := c.roundTrip(t, "GET /three HTTP/1.1\r\nHost: a\r\n\r\n")
			if resp.StatusCode != 200 || body != "/three" {
				t.Fatalf("got %d %q", resp.StatusCode, body)
			}
		})
	}
}
