package integration

import (
	"io"
	"net/http"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

func slowBackend(t *testing.T, d time.Duration) *fnBackend {
	return startFnBackend(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("grpc-status", "0")
		w.WriteHeader(200)
	})
}

// The route timeout answers 504 with flag UT on both downstream codecs.
func TestRouteTimeout504(t *testing.T) {
	be := slowBackend(t, 3*time.Second)
	vh := vhost(catchAll("slow", func(a *routev3.RouteAction) { a.Timeout = durationpb.New(200 * time.Millisecond) }))
	m := startPolicyMesh(t, vh, clusterv3.Cluster_ROUND_ROBIN, map[string][]string{"slow": {be.addr}})
	for _, tc := range []struct {
		name string
		c    *http.Client
	}{{"http1", h1Client()}, {"h2c", h2cClient()}} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp, err := tc.c.Get(m.url("/"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			took := time.Since(start)
			if resp.StatusCode != 504 || resp.Header.Get("x-meshlet-response-flags") != "UT" || string(body) != "upstream request timeout" {
				t.Errorf("got %d %q %q, want 504 UT", resp.StatusCode, resp.Header.Get("x-meshlet-response-flags"), body)
			}
			if took < 150*time.Millisecond || took > 2*time.Second {
				t.Errorf("answered after %v, want ~200ms", took)
			}
		})
	}
}

func grpcCall(t *testing.T, c *http.Client, url, timeout string) (status string, took time.Duration) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, nil)
	req.Header.Set("content-type", "application/grpc")
	req.Header.Set("te", "trailers")
	if timeout != "" {
		req.Header.Set("grpc-timeout", timeout)
	}
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	st := resp.Trailer.Get("grpc-status")
	if st == "" {
		st = resp.Header.Get("grpc-status")
	}
	return st, time.Since(start)
}

// max_stream_duration ends a gRPC call with DEADLINE_EXCEEDED; with
// grpc_timeout_header_max the client's grpc-timeout (capped) governs
// instead (gRFC A31).
func TestGRPCMaxStreamDuration(t *testing.T) {
	be := slowBackend(t, 3*time.Second)
	vh := vhost(
		&routev3.Route{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/capped/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "slow"},
				MaxStreamDuration: &routev3.RouteAction_MaxStreamDuration{
					MaxStreamDuration:    durationpb.New(5 * time.Second),
					GrpcTimeoutHeaderMax: durationpb.New(300 * time.Millisecond),
				},
			}},
		},
		catchAll("slow", func(a *routev3.RouteAction) {
			a.MaxStreamDuration = &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(250 * time.Millisecond)}
		}),
	)
	m := startPolicyMesh(t, vh, clusterv3.Cluster_ROUND_ROBIN, map[string][]string{"slow": {be.addr}})
	c := h2cClient()
	tests := []struct {
		name, path, timeout string
		min, max            time.Duration
	}{
		{"max_stream_duration", "/svc/M", "", 200 * time.Millisecond, 2 * time.Second},
		{"grpc-timeout capped by header max", "/capped/M", "10S", 250 * time.Millisecond, 2 * time.Second},
		{"grpc-timeout under header max", "/capped/M", "100m", 50 * time.Millisecond, 250 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, took := grpcCall(t, c, m.url(tt.path), tt.timeout)
			if st != "4" {
				t.Errorf("grpc-status %q, want 4 (DEADLINE_EXCEEDED)", st)
			}
			if took < tt.min || took > tt.max {
				t.Errorf("answered after %v, want in [%v, %v]", took, tt.min, tt.max)
			}
		})
	}
}
