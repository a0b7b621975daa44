package upstream

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

func nilLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestHealthStateMachine: Envoy's transitions, table-driven.
func TestHealthStateMachine(t *testing.T) {
	P, A, N := hcPass, hcFailActive, hcFailNetwork
	for _, tc := range []struct {
		name    string
		start   hcState
		results []hcResult
		failed  []bool // after each result
	}{
		{"pending host: one pass is enough", hcState{failed: true, pending: true}, []hcResult{P}, []bool{false}},
		{"pending host fails then needs threshold", hcState{failed: true, pending: true}, []hcResult{N, P, P}, []bool{true, true, false}},
		{"network failures count to threshold", hcState{}, []hcResult{N, N, N}, []bool{false, false, true}},
		{"a pass resets the failure run", hcState{}, []hcResult{N, N, P, N, N}, []bool{false, false, false, false, false}},
		{"active failure is immediate", hcState{}, []hcResult{A}, []bool{true}},
		{"recovery needs healthy_threshold passes", hcState{failed: true}, []hcResult{P, N, P, P}, []bool{true, true, true, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.start
			for i, r := range tc.results {
				s.apply(r, 2, 3)
				if s.failed != tc.failed[i] {
					t.Fatalf("after result %d (%v): failed = %v, want %v", i, r, s.failed, tc.failed[i])
				}
			}
		})
	}
}

func TestNextInterval(t *testing.T) {
	cfg := &state.HealthCheck{
		Interval: 10 * time.Second, NoTrafficInterval: 60 * time.Second, NoTrafficHealthyInterval: 90 * time.Second,
		UnhealthyInterval: 3 * time.Second, UnhealthyEdgeInterval: time.Second, HealthyEdgeInterval: 2 * time.Second,
	}
	none := func(time.Duration) time.Duration { return 0 }
	full := func(d time.Duration) time.Duration { return d }
	for _, tc := range []struct {
		name            string
		failed, changed bool
		traffic         bool
		jitter          func(time.Duration) time.Duration
		pct             uint32
		abs             time.Duration
		want            time.Duration
	}{
		{"healthy", false, false, true, none, 0, 0, 10 * time.Second},
		{"healthy edge", false, true, true, none, 0, 0, 2 * time.Second},
		{"unhealthy", true, false, true, none, 0, 0, 3 * time.Second},
		{"unhealthy edge", true, true, true, none, 0, 0, time.Second},
		{"no traffic healthy", false, false, false, none, 0, 0, 90 * time.Second},
		{"no traffic unhealthy", true, false, false, none, 0, 0, 60 * time.Second},
		{"jitter percent and absolute", false, false, true, full, 50, time.Second, 16 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := *cfg
			c.IntervalJitterPercent, c.IntervalJitter = tc.pct, tc.abs
			s := hcState{failed: tc.failed}
			if got := nextInterval(&c, &s, tc.changed, tc.traffic, tc.jitter); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// probeCluster returns a cluster with one host at addr, for probing.
func probeCluster(t *testing.T, addr string) (*Cluster, *lb.Host) {
	t.Helper()
	c := newCluster(&state.Cluster{Name: "svc"}, nilLogger())
	c.setHosts(c.Spec(), cla("svc", addr))
	t.Cleanup(c.close)
	return c, c.LB.Hosts()[0]
}

func probeOnce(t *testing.T, c *Cluster, h *lb.Host, cfg *state.HealthCheck) hcResult {
	t.Helper()
	p := newProber(c, cfg, h)
	defer p.close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return p.probe(ctx)
}

func TestProbeHTTP(t *testing.T) {
	var lastHost, lastUA, lastHdr, lastProto atomic.Value
	var code atomic.Int32
	code.Store(200)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		lastHost.Store(r.Host)
		lastUA.Store(r.UserAgent())
		lastHdr.Store(r.Header.Get("x-check"))
		lastProto.Store(r.Proto)
		if r.URL.Path != "/healthz" {
			w.WriteHeader(404)
			return
		}
		w.WriteHeader(int(code.Load()))
	})}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	c, h := probeCluster(t, ln.Addr().String())
	for _, tc := range []struct {
		name string
		code int
		hc   state.HTTPHealthCheck
		want hcResult
	}{
		{"200 passes", 200, state.HTTPHealthCheck{Path: "/healthz"}, hcPass},
		{"h2c", 200, state.HTTPHealthCheck{Path: "/healthz", HTTP2: true}, hcPass},
		{"503 fails at once", 503, state.HTTPHealthCheck{Path: "/healthz"}, hcFailActive},
		{"wrong path", 200, state.HTTPHealthCheck{Path: "/other"}, hcFailActive},
		{"expected range", 204, state.HTTPHealthCheck{Path: "/healthz", ExpectedStatuses: []state.StatusRange{{Start: 200, End: 300}}}, hcPass},
		{"retriable", 429, state.HTTPHealthCheck{Path: "/healthz", RetriableStatuses: []state.StatusRange{{Start: 429, End: 430}}}, hcFailNetwork},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code.Store(int32(tc.code))
			tc.hc.RequestHeadersToAdd = []state.HeaderValueOption{{Key: "x-check", Value: "yes"}}
			if got := probeOnce(t, c, h, &state.HealthCheck{Kind: state.HealthCheckHTTP, HTTP: &tc.hc}); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			wantProto := "HTTP/1.1"
			if tc.hc.HTTP2 {
				wantProto = "HTTP/2.0"
			}
			if lastProto.Load() != wantProto {
				t.Fatalf("probe spoke %v, want %s", lastProto.Load(), wantProto)
			}
			if lastHost.Load() != "svc" || lastUA.Load() != hcUserAgent || lastHdr.Load() != "yes" {
				t.Fatalf("request host %v ua %v x-check %v", lastHost.Load(), lastUA.Load(), lastHdr.Load())
			}
		})
	}
	srv.Close()
	if got := probeOnce(t, c, h, &state.HealthCheck{Kind: state.HealthCheckHTTP, HTTP: &state.HTTPHealthCheck{Path: "/healthz"}}); got != hcFailNetwork {
		t.Fatalf("closed server: got %v, want network failure", got)
	}
}

func TestProbeGRPC(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go gs.Serve(ln)
	defer gs.Stop()
	hs.SetServingStatus("echo", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("down", healthpb.HealthCheckResponse_NOT_SERVING)
	c, h := probeCluster(t, ln.Addr().String())
	for _, tc := range []struct {
		service string
		want    hcResult
	}{{"", hcPass}, {"echo", hcPass}, {"down", hcFailActive}, {"unknown", hcFailActive}} {
		got := probeOnce(t, c, h, &state.HealthCheck{Kind: state.HealthCheckGRPC, GRPC: &state.GRPCHealthCheck{ServiceName: tc.service}})
		if got != tc.want {
			t.Errorf("service %q: got %v, want %v", tc.service, got, tc.want)
		}
	}
}

func TestProbeTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				buf := make([]byte, 4)
				if _, err := io.ReadFull(conn, buf); err != nil {
					return
				}
				if string(buf) == "ping" {
					conn.Write([]byte("xxPOyyNGzz"))
				} else {
					conn.Write([]byte("nope"))
				}
			}()
		}
	}()
	c, h := probeCluster(t, ln.Addr().String())
	for _, tc := range []struct {
		name string
		tcp  state.TCPHealthCheck
		want hcResult
	}{
		{"connect only", state.TCPHealthCheck{}, hcPass},
		{"chunks in order", state.TCPHealthCheck{Send: []byte("ping"), Receive: [][]byte{[]byte("PO"), []byte("NG")}}, hcPass},
		{"chunks out of order", state.TCPHealthCheck{Send: []byte("ping"), Receive: [][]byte{[]byte("NG"), []byte("PO")}}, hcFailActive},
		{"wrong reply", state.TCPHealthCheck{Send: []byte("pong"), Receive: [][]byte{[]byte("PONG")}}, hcFailActive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := probeOnce(t, c, h, &state.HealthCheck{Kind: state.HealthCheckTCP, TCP: &tc.tcp}); got != tc.want {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	ln.Close()
	if got := probeOnce(t, c, h, &state.HealthCheck{Kind: state.HealthCheckTCP, TCP: &state.TCPHealthCheck{}}); got != hcFailNetwork {
		t.Fatalf("closed listener: got %v", got)
	}
}

// TestActiveHealthCheckDrivesPicker: through the Manager, a host whose
// health endpoint fails leaves the picker and comes back when it passes.
func TestActiveHealthCheckDrivesPicker(t *testing.T) {
	var good, bad atomic.Bool
	good.Store(true)
	bad.Store(false)
	start := func(ok *atomic.Bool) string {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if ok.Load() {
				w.WriteHeader(200)
			} else {
				w.WriteHeader(503)
			}
		})}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		return ln.Addr().String()
	}
	a, b := start(&good), start(&bad)
	store := state.NewStore()
	m := NewManager(store, nilLogger())
	defer m.Close()
	hc := state.HealthCheck{
		Kind: state.HealthCheckHTTP, HTTP: &state.HTTPHealthCheck{Path: "/"},
		Timeout: time.Second, Interval: 20 * time.Millisecond, NoTrafficInterval: 20 * time.Millisecond,
		UnhealthyInterval: 20 * time.Millisecond, UnhealthyEdgeInterval: 20 * time.Millisecond, HealthyEdgeInterval: 20 * time.Millisecond,
		UnhealthyThreshold: 2, HealthyThreshold: 2,
	}
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["c"] = &state.Cluster{Name: "c", HealthChecks: []state.HealthCheck{hc}, LoadAssignment: cla("c", a, b)}
		return true
	})
	c := m.Cluster("c")
	picks := func() map[string]int {
		got := map[string]int{}
		for range 50 {
			h, err := c.Pick(&lb.PickInfo{})
			if err != nil {
				t.Fatal(err)
			}
			got[h.Address]++
		}
		return got
	}
	waitFor := func(what string, cond func(map[string]int) bool) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := picks()
			if cond(got) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: picks %v", what, got)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("only the passing host", func(m map[string]int) bool { return m[a] == 50 })
	bad.Store(true)
	waitFor("both after recovery", func(m map[string]int) bool { return m[a] > 0 && m[b] > 0 })
	good.Store(false)
	waitFor("only b after a fails", func(m map[string]int) bool { return m[b] == 50 })
	// Removing the health check returns every host.
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["c"] = &state.Cluster{Name: "c", LoadAssignment: cla("c", a, b)}
		return true
	})
	waitFor("both without health checks", func(m map[string]int) bool { return m[a] > 0 && m[b] > 0 })
}
