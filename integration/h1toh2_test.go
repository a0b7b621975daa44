package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// An HTTP/1.1 client of an HTTP/2 cluster gets the route's retries like
// every other path: a backend failing every other request is invisible
// to the client, the retries carry x-envoy-attempt-count, and a per-try
// timeout moves a stuck attempt to a retry.
func TestH1ClientH2UpstreamRetries(t *testing.T) {
	var retried atomic.Int64
	be := r2Backend(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			w.WriteHeader(500)
			return
		}
		if r.Header.Get("x-envoy-attempt-count") == "2" {
			retried.Add(1)
		}
		switch {
		case r.URL.Path == "/stuck" && n%2 == 0:
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
		case r.URL.Path == "/flaky" && n%2 == 0:
			w.WriteHeader(503)
		}
	})
	vh := vhost(catchAll("h2svc", func(a *routev3.RouteAction) {
		p := retryPolicy("5xx", 2)
		p.PerTryTimeout = durationpb.New(200 * time.Millisecond)
		a.RetryPolicy = p
	}))
	vh.IncludeRequestAttemptCount = true
	m := startR2Mesh(t, vh, nil, r2Cluster{r2EDSCluster("h2svc", true), []string{be.addr}})
	client := h1Client()
	for _, path := range []string{"/flaky", "/stuck"} {
		retried.Store(0)
		for i := range 6 {
			start := time.Now()
			resp, err := client.Get(m.url(path))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s #%d: status %d flags %q", path, i, resp.StatusCode, resp.Header.Get("x-meshlet-response-flags"))
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Fatalf("%s #%d took %v", path, i, took)
			}
		}
		if retried.Load() == 0 {
			t.Fatalf("%s: no retry reached the backend with x-envoy-attempt-count 2", path)
		}
	}
}

// A client that leaves while the upstream works cancels the upstream
// request at once (DC), for HTTP/1.1 and HTTP/2 clusters alike.
func TestH1ClientDisconnectCancelsUpstream(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("http2=%v", h2), func(t *testing.T) {
			started := make(chan struct{}, 1)
			cancelled := make(chan time.Time, 1)
			be := r2Backend(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				select {
				case <-r.Context().Done():
					cancelled <- time.Now()
				case <-time.After(5 * time.Second):
				}
			})
			m := startR2Mesh(t, vhost(routeTo("svc")), nil, r2Cluster{r2EDSCluster("svc", h2), []string{be.addr}})
			c, err := net.Dial("tcp", m.listener)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(c, "GET /work HTTP/1.1\r\nHost: svc\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			select {
			case <-started:
			case <-time.After(5 * time.Second):
				t.Fatal("request never reached the backend")
			}
			time.Sleep(50 * time.Millisecond)
			left := time.Now()
			c.Close()
			select {
			case at := <-cancelled:
				// The old check ran once a second; allow for a busy machine.
				if d := at.Sub(left); d > 500*time.Millisecond {
					t.Fatalf("upstream cancelled %v after the client left", d)
				}
			case <-time.After(4 * time.Second):
				t.Fatal("upstream request not cancelled")
			}
		})
	}
}
