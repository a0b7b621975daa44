package integration

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// headerRecorder is an HTTP/1.1 + h2c backend that keeps the request
// headers it was sent, by path.
type headerRecorder struct {
	addr string
	mu   sync.Mutex
	seen map[string]http.Header
}

func startHeaderRecorder(t *testing.T) *headerRecorder {
	t.Helper()
	r := &headerRecorder{seen: map[string]http.Header{}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.seen[req.URL.Path] = req.Header.Clone()
		r.mu.Unlock()
		w.Header().Set("x-backend", "rec")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *headerRecorder) headers(path string) http.Header {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[path]
}

var uuidRE = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// TestTraceHeaderPropagation: W3C trace context (traceparent, tracestate),
// B3 (multi-header and single b3) and x-request-id cross two proxy hops
// unchanged over HTTP/1.1 and h2c; a request without x-request-id gets a
// UUIDv4 at the first hop, and the second hop keeps it (Envoy's connection
// manager: generate at the edge, preserve on internal hops).
func TestTraceHeaderPropagation(t *testing.T) {
	cp := startControlPlane(t)
	rec := startHeaderRecorder(t)
	front := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	hop := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cp.set(
		httpListener(t, "front", front, "front"), routeConfig("front", routeTo("hop")),
		httpListener(t, "hop", hop, "hop"), routeConfig("hop", routeTo("rec")),
		edsCluster("hop", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "hop", hop),
		edsCluster("rec", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "rec", rec.addr))
	startZtunnel(t, cp, proxyOpts{})

	trace := map[string]string{
		"traceparent":       "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		"tracestate":        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
		"x-b3-traceid":      "80f198ee56343ba864fe8b2a57d3eff7",
		"x-b3-spanid":       "e457b5a2e4d86bd1",
		"x-b3-parentspanid": "05e3ac9a4f6e3b90",
		"x-b3-sampled":      "1",
		"b3":                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
	}
	for _, tc := range []struct {
		name   string
		client *http.Client
	}{{"http1", h1Client()}, {"h2c", h2cClient()}} {
		t.Run(tc.name, func(t *testing.T) {
			with := map[string]string{"x-request-id": "req-" + tc.name}
			for k, v := range trace {
				with[k] = v
			}
			paths := map[string]map[string]string{"/" + tc.name + "/traced": with, "/" + tc.name + "/bare": nil}
			for path, hdr := range paths {
				eventually(t, 10*time.Second, func() error {
					code, be, _, err := get(tc.client, "http://"+front+path, hdr)
					if err != nil || code != 200 || be != "rec" {
						return fmt.Errorf("GET %s: %d %q %v", path, code, be, err)
					}
					return nil
				})
			}
			got := rec.headers("/" + tc.name + "/traced")
			for k, v := range with {
				if g := got.Get(k); g != v {
					t.Errorf("%s at the backend = %q, want %q", k, g, v)
				}
			}
			bare := rec.headers("/" + tc.name + "/bare")
			if ids := bare.Values("x-request-id"); len(ids) != 1 || !uuidRE.MatchString(ids[0]) {
				t.Errorf("generated x-request-id = %q, want one UUIDv4", ids)
			}
			for k := range trace {
				if v := bare.Get(k); v != "" {
					t.Errorf("%s = %q appeared on a request without trace context", k, v)
				}
			}
		})
	}
}
