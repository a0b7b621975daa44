package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
)

// peerHTTPBackend answers every request (HTTP/1.1 or h2c) with the IP of
// the connection's peer: what an app behind the proxy sees.
func peerHTTPBackend(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "%s %s", r.Proto, host)
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().String()
}

// peerTCPBackend writes the peer IP of each connection and closes it.
func peerTCPBackend(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			_, _ = io.WriteString(c, host)
			c.Close()
		}
	}()
	t.Cleanup(func() { lis.Close() })
	return lis.Addr().String()
}

// boundCluster is a STATIC CDS cluster whose upstream connections bind
// source (Istio's inbound cluster shape).
func boundCluster(t *testing.T, name, source string, http2 bool, addr string) *clusterv3.Cluster {
	t.Helper()
	c := edsCluster(name, clusterv3.Cluster_ROUND_ROBIN, http2)
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	c.EdsClusterConfig = nil
	c.ConnectTimeout = durationpb.New(time.Second)
	c.LoadAssignment = endpoints(t, name, addr)
	c.UpstreamBindConfig = &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{
		Address: source, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
	}}
	return c
}

// TestClusterUpstreamBind: with upstream_bind_config 127.0.0.6 the app sees
// connections from 127.0.0.6 over HTTP/1.1, HTTP/2 and tcp_proxy; a
// cluster whose source address is not an IP is NACKed with the field path
// and the running config keeps working.
func TestClusterUpstreamBind(t *testing.T) {
	cp := startControlPlane(t)
	httpBE, tcpBE := peerHTTPBackend(t), peerTCPBackend(t)
	h1L := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	h2L := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tcpL := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	good := []types.Resource{
		httpListener(t, "h1", h1L, "r1"), routeConfig("r1", routeTo("bound-h1")),
		httpListener(t, "h2", h2L, "r2"), routeConfig("r2", routeTo("bound-h2")),
		tcpListener(t, "tcp", tcpL, "bound-tcp"),
		boundCluster(t, "bound-h1", "127.0.0.6", false, httpBE),
		boundCluster(t, "bound-h2", "127.0.0.6", true, httpBE),
		boundCluster(t, "bound-tcp", "127.0.0.6", false, tcpBE),
	}
	cp.set(good...)
	startProxy(t, cp, proxyOpts{})

	for _, tc := range []struct {
		name, url, want string
	}{
		{"HTTP/1.1 pool", "http://" + h1L + "/", "HTTP/1.1 127.0.0.6"},
		{"HTTP/2 pool", "http://" + h2L + "/", "HTTP/2.0 127.0.0.6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			eventually(t, 10*time.Second, func() error {
				code, _, body, err := get(h1Client(), tc.url, nil)
				if err != nil || code != 200 || body != tc.want {
					return fmt.Errorf("code %d body %q err %v; want %q", code, body, err, tc.want)
				}
				return nil
			})
		})
	}
	tcpPeer := func() (string, error) {
		c, err := net.DialTimeout("tcp", tcpL, 2*time.Second)
		if err != nil {
			return "", err
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		return string(b), err
	}
	t.Run("tcp_proxy", func(t *testing.T) {
		eventually(t, 10*time.Second, func() error {
			got, err := tcpPeer()
			if err != nil || got != "127.0.0.6" {
				return fmt.Errorf("backend saw peer %q (err %v), want 127.0.0.6", got, err)
			}
			return nil
		})
	})

	t.Run("invalid source address is NACKed", func(t *testing.T) {
		bad := boundCluster(t, "bad", "pod.local", false, httpBE)
		cp.set(append(good, bad)...)
		eventually(t, 10*time.Second, func() error {
			for _, msg := range cp.nackMessages() {
				if strings.Contains(msg, `"bad"`) && strings.Contains(msg, "upstream_bind_config.source_address.address") {
					return nil
				}
			}
			return fmt.Errorf("no NACK naming cluster \"bad\" and upstream_bind_config.source_address.address yet: %q", cp.nackMessages())
		})
		// The last good clusters keep binding 127.0.0.6.
		if got, err := tcpPeer(); err != nil || got != "127.0.0.6" {
			t.Fatalf("after NACK: backend saw peer %q (err %v), want 127.0.0.6", got, err)
		}
	})
}
