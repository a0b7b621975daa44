package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
)

// upstreamAge is the clusters' max_connection_duration.
const upstreamAge = 400 * time.Millisecond

// lifeBackend is an HTTP/1.1 + h2c server counting the connections it
// accepted and those still open; x-delay delays the answer.
type lifeBackend struct {
	addr         string
	conns, alive atomic.Int64
}

func startLifeBackend(t *testing.T) *lifeBackend {
	t.Helper()
	b := &lifeBackend{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = lis.Addr().String()
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Protocols: protos,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if d, err := time.ParseDuration(r.Header.Get("x-delay")); err == nil {
				time.Sleep(d)
			}
			io.WriteString(w, "ok")
		}),
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				b.conns.Add(1)
				b.alive.Add(1)
			case http.StateClosed, http.StateHijacked:
				b.alive.Add(-1)
			}
		},
	}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return b
}

// agedCluster is an EDS cluster speaking http2 or HTTP/1.1 upstream with
// common_http_protocol_options.max_connection_duration, the way istiod
// renders DestinationRule connectionPool.tcp.maxConnectionDuration.
func agedCluster(t *testing.T, name string, http2 bool) *clusterv3.Cluster {
	t.Helper()
	c := edsCluster(name, clusterv3.Cluster_ROUND_ROBIN, false)
	explicit := &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
	}
	if http2 {
		explicit.ProtocolConfig = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}}
	}
	opts := &httpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{MaxConnectionDuration: durationpb.New(upstreamAge)},
		UpstreamProtocolOptions:   &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: explicit},
	}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": anyOf(t, opts)}
	return c
}

// TestUpstreamLifetimes: the real binary, configured over xDS, retires
// upstream connections at the cluster's max_connection_duration (idle ones
// are not reused; a busy one finishes its request, then closes) for
// HTTP/1.1 and HTTP/2 upstreams, and closes a tcp_proxy connection at
// max_downstream_connection_duration.
func TestUpstreamLifetimes(t *testing.T) {
	cp := startControlPlane(t)
	beH1, beH2 := startLifeBackend(t), startLifeBackend(t)
	echo := startTCPEcho(t)
	h1Addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	h2Addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	tcpAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	const tcpLimit = 500 * time.Millisecond
	tp := &tcpv3.TcpProxy{
		StatPrefix:                      "tcp",
		ClusterSpecifier:                &tcpv3.TcpProxy_Cluster{Cluster: "echo"},
		MaxDownstreamConnectionDuration: durationpb.New(tcpLimit),
	}
	cp.set(
		httpListener(t, "h1", h1Addr, "h1-routes"), routeConfig("h1-routes", routeTo("svc-h1")),
		httpListener(t, "h2", h2Addr, "h2-routes"), routeConfig("h2-routes", routeTo("svc-h2")),
		agedCluster(t, "svc-h1", false), endpoints(t, "svc-h1", beH1.addr),
		agedCluster(t, "svc-h2", true), endpoints(t, "svc-h2", beH2.addr),
		listenerOn(t, "tcp", tcpAddr, &listenerv3.Filter{
			Name:       "envoy.filters.network.tcp_proxy",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, tp)},
		}),
		edsCluster("echo", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "echo", echo),
	)
	startProxy(t, cp, proxyOpts{})
	waitListening(t, h1Addr)
	waitListening(t, h2Addr)
	waitListening(t, tcpAddr)

	for _, tc := range []struct {
		name string
		addr string
		be   *lifeBackend
	}{
		{"http1 upstream", h1Addr, beH1},
		{"http2 upstream", h2Addr, beH2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h1Client()
			defer c.CloseIdleConnections()
			do := func(delay string) {
				t.Helper()
				hdr := map[string]string{}
				if delay != "" {
					hdr["x-delay"] = delay
				}
				st, _, body, err := get(c, "http://"+tc.addr+"/", hdr)
				if err != nil || st != 200 || body != "ok" {
					t.Fatalf("GET: %d %q %v", st, body, err)
				}
			}
			wantConns := func(n int64, why string) {
				t.Helper()
				if got := tc.be.conns.Load(); got != n {
					t.Fatalf("backend accepted %d connections, want %d (%s)", got, n, why)
				}
			}
			do("")
			do("")
			wantConns(1, "a young connection is reused")
			time.Sleep(upstreamAge + 100*time.Millisecond)
			do("")
			wantConns(2, "an aged idle connection is not reused")
			// The request in flight outlives the connection's age: it
			// completes, then the connection closes instead of pooling.
			do((upstreamAge + 200*time.Millisecond).String())
			eventually(t, 3*time.Second, func() error {
				if n := tc.be.alive.Load(); n != 0 {
					return fmt.Errorf("%d upstream connections still open after their age", n)
				}
				return nil
			})
			do("")
			wantConns(3, "a new connection after the aged one closed")
		})
	}

	t.Run("tcp_proxy max_downstream_connection_duration", func(t *testing.T) {
		conn, err := net.Dial("tcp", tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		buf := make([]byte, 1)
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		// Echo round trips keep it busy until the limit closes it.
		for {
			if _, err := conn.Write([]byte("x")); err != nil {
				break
			}
			if _, err := io.ReadFull(conn, buf); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("connection still open 5s after max_downstream_connection_duration")
				}
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if d := time.Since(start); d < tcpLimit-50*time.Millisecond || d > tcpLimit+2*time.Second {
			t.Fatalf("connection ended after %v, want about %v", d, tcpLimit)
		}
	})
}
