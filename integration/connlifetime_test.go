package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// connLifetimeAge is the listener's max_connection_duration; requests
// with x-delay twice as long are in flight when it passes.
const connLifetimeAge = 400 * time.Millisecond

// TestConnLifetime: with common_http_protocol_options
// max_connection_duration, an HTTP/1.1 keep-alive client gets
// connection: close on the response in flight when the duration passes and
// continues on a new connection; an h2 client gets GOAWAY, its stream in
// flight completes, and the next request goes over a new connection
// without the client seeing an error.
func TestConnLifetime(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "v1")
	lAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	l := httpListener(t, "web", lAddr, "web-routes")
	var hcm hcmv3.HttpConnectionManager
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	hcm.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxConnectionDuration: durationpb.New(connLifetimeAge)}
	hcm.DrainTimeout = durationpb.New(5 * time.Second)
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &hcm)}
	cp.set(l, routeConfig("web-routes", routeTo("svc")),
		edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "svc", be.addr))
	startZtunnel(t, cp, proxyOpts{})
	waitListening(t, lAddr)
	slow := (2 * connLifetimeAge).String()

	clients := []struct {
		name   string
		client *http.Client
		// closeInFlight: the response in flight says connection: close.
		closeInFlight bool
	}{
		{"http1", h1Client(), true},
		{"h2c", h2cClient(), false},
	}
	for _, c := range clients {
		t.Run(c.name, func(t *testing.T) {
			defer c.client.CloseIdleConnections()
			var conns []string
			do := func(delay string) *http.Response {
				t.Helper()
				req, _ := http.NewRequest("GET", "http://"+lAddr+"/", nil)
				if delay != "" {
					req.Header.Set("x-delay", delay)
				}
				req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
					GotConn: func(i httptrace.GotConnInfo) { conns = append(conns, i.Conn.LocalAddr().String()) },
				}))
				resp, err := c.client.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v", len(conns), err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || resp.Header.Get("x-backend") != "v1" {
					t.Fatalf("request %d: %d %q", len(conns), resp.StatusCode, body)
				}
				return resp
			}
			if resp := do(""); resp.Close {
				t.Fatal("first response closes the connection")
			}
			if resp := do(slow); resp.Close != c.closeInFlight {
				t.Fatalf("response in flight at max_connection_duration: close %v, want %v", resp.Close, c.closeInFlight)
			}
			do("")
			if len(conns) != 3 || conns[0] != conns[1] || conns[1] == conns[2] {
				t.Fatalf("client connections %q: want the first two requests on one connection, the third on a new one", conns)
			}
		})
	}
}
