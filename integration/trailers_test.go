package integration

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// h1TrailersCluster is an HTTP/1.1 EDS cluster; enable sets
// http_protocol_options.enable_trailers in its typed protocol options.
func h1TrailersCluster(t *testing.T, name string, enable bool) *clusterv3.Cluster {
	c := r2EDSCluster(name, false)
	opts := &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
				HttpProtocolOptions: &corev3.Http1ProtocolOptions{EnableTrailers: enable},
			},
		},
	}}
	a, err := anypb.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": a}
	return c
}

// Chunked trailers of an HTTP/1.1 upstream, as Envoy handles them: with
// the cluster's enable_trailers an HTTP/2 client gets them as HTTP/2
// trailers; an HTTP/1.1 client also needs the connection manager's
// enable_trailers; by default they are dropped.
func TestTrailersFromH1Upstream(t *testing.T) {
	be := r2Backend(t, func(_ int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		io.WriteString(w, "payload")
		w.(http.Flusher).Flush() // chunked
		w.Header().Set("X-Checksum", "abc123")
	})
	tests := []struct {
		name             string
		clusterOn, hcmOn bool
		wantH2, wantH1   string
	}{
		{"defaults drop", false, false, "", ""},
		{"cluster only: HTTP/2 clients", true, false, "abc123", ""},
		{"cluster and hcm: everyone", true, true, "abc123", "abc123"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := startR2Mesh(t, vhost(routeTo("svc")), func(h *hcmv3.HttpConnectionManager) {
				h.HttpProtocolOptions = &corev3.Http1ProtocolOptions{EnableTrailers: tc.hcmOn}
			}, r2Cluster{h1TrailersCluster(t, "svc", tc.clusterOn), []string{be.addr}})

			resp, err := h2cClient().Get(m.url("/t"))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "payload" || resp.Trailer.Get("X-Checksum") != tc.wantH2 {
				t.Fatalf("HTTP/2 client: body %q trailers %v, want x-checksum %q", body, resp.Trailer, tc.wantH2)
			}

			// Raw HTTP/1.1 so nothing between us and the proxy eats the
			// trailer section.
			c, err := net.Dial("tcp", m.listener)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, "GET /t HTTP/1.1\r\nHost: svc\r\n\r\n")
			resp, err = http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			if string(body) != "payload" || resp.Trailer.Get("X-Checksum") != tc.wantH1 {
				t.Fatalf("HTTP/1.1 client: body %q trailers %v, want x-checksum %q", body, resp.Trailer, tc.wantH1)
			}
		})
	}
}
