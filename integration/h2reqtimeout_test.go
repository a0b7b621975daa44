package integration

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshlet/meshlet/internal/trickle"
)

// h2ReqTimeout is the listener's request_timeout in TestH2RequestTimeout.
const h2ReqTimeout = 300 * time.Millisecond

// TestH2RequestTimeout: the connection manager's request_timeout applies
// to HTTP/2 streams (h2c here). A request whose body is still arriving at
// the deadline gets 408 "request timeout"; one complete in time is served
// even when the upstream answers after the deadline (the timer stops once
// the request has ended, as in Envoy).
func TestH2RequestTimeout(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "v1")
	lAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	l := httpListener(t, "web", lAddr, "web-routes")
	var hcm hcmv3.HttpConnectionManager
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	hcm.RequestTimeout = durationpb.New(h2ReqTimeout)
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &hcm)}
	cp.set(l, routeConfig("web-routes", routeTo("svc")),
		edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "svc", be.addr))
	startZtunnel(t, cp, proxyOpts{})
	waitListening(t, lAddr)
	client := h2cClient()
	defer client.CloseIdleConnections()

	tests := []struct {
		name   string
		body   *trickle.Body
		delay  time.Duration // x-delay: the backend answers this late
		status int
		want   string // in the response body
	}{
		{"body too slow", trickle.New(100, 50*time.Millisecond, 'x'), 0, 408, "request timeout"},
		{"body in time", trickle.New(3, 20*time.Millisecond, 'x'), 0, 200, "v1 HTTP/1.1 POST / body=3"},
		{"late response to a complete request", trickle.New(2, 0, 'x'), 2 * h2ReqTimeout, 200, "v1 HTTP/1.1 POST / body=2"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.body.Close()
			req, _ := http.NewRequest("POST", "http://"+lAddr+"/", tc.body)
			if tc.delay > 0 {
				req.Header.Set("x-delay", tc.delay.String())
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) {
				t.Fatalf("got %d %q (%v), want %d with %q", resp.StatusCode, body, err, tc.status, tc.want)
			}
		})
	}
}
