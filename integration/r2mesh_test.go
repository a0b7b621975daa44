package integration

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// r2Mesh is a control plane and the real proxy serving one virtual host
// over clusters the test builds whole (circuit breakers, protocol
// options), behind a connection manager the test may edit.
type r2Mesh struct {
	cp       *controlPlane
	listener string
}

type r2Cluster struct {
	c     *clusterv3.Cluster
	addrs []string
}

func startR2Mesh(t *testing.T, vh *routev3.VirtualHost, editHCM func(*hcmv3.HttpConnectionManager), clusters ...r2Cluster) *r2Mesh {
	t.Helper()
	m := &r2Mesh{cp: startControlPlane(t)}
	m.listener = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	l := httpListener(t, "http", m.listener, "local")
	if editHCM != nil {
		var hcm hcmv3.HttpConnectionManager
		tc := l.FilterChains[0].Filters[0].GetTypedConfig()
		if err := tc.UnmarshalTo(&hcm); err != nil {
			t.Fatal(err)
		}
		editHCM(&hcm)
		l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &hcm)}
	}
	res := []types.Resource{l, &routev3.RouteConfiguration{Name: "local", VirtualHosts: []*routev3.VirtualHost{vh}}}
	for _, c := range clusters {
		res = append(res, c.c, endpoints(t, c.c.Name, c.addrs...))
	}
	m.cp.set(res...)
	startProxy(t, m.cp, proxyOpts{})
	// Ready once a request reaches a backend (they all set x-r2-backend).
	c := h1Client()
	eventually(t, 10*time.Second, func() error {
		resp, err := c.Get(m.url("/ready"))
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.Header.Get("x-r2-backend") == "" {
			return fmt.Errorf("status %d flags %q", resp.StatusCode, resp.Header.Get("x-meshlet-response-flags"))
		}
		return nil
	})
	return m
}

func (m *r2Mesh) url(path string) string { return "http://" + m.listener + path }

// r2Backend is startFnBackend whose responses say they come from a
// backend (startR2Mesh waits for that) and that answers /ready with 200.
func r2Backend(t *testing.T, handler func(n int64, w http.ResponseWriter, r *http.Request)) *fnBackend {
	return startFnBackend(t, func(n int64, w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-r2-backend", "1")
		if r.URL.Path == "/ready" {
			return
		}
		handler(n, w, r)
	})
}

// r2EDSCluster is edsCluster with the HTTP/1.1 or HTTP/2 protocol and
// room for concurrent retries unless the test sets its own breakers.
func r2EDSCluster(name string, http2 bool) *clusterv3.Cluster {
	return edsCluster(name, clusterv3.Cluster_ROUND_ROBIN, http2)
}
