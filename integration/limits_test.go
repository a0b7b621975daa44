package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	connlimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// echoTCP is a TCP backend that echoes every line.
func echoTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	return ln.Addr().String()
}

// echoes dials addr and reports whether a line comes back through it.
func echoes(t *testing.T, addr string) (net.Conn, bool) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return nil, false
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return c, false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return c, err == nil && line == "ping\n"
}

// TestConnectionLimitFilter: a tcp_proxy chain behind connection_limit
// (max 2) serves two concurrent connections and closes the third; closing
// one lets a new one in.
func TestConnectionLimitFilter(t *testing.T) {
	cp := startControlPlane(t)
	be := echoTCP(t)
	lAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	l := tcpListener(t, "tcp", lAddr, "svc")
	l.FilterChains[0].Filters = append([]*listenerv3.Filter{{Name: "envoy.filters.network.connection_limit",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &connlimitv3.ConnectionLimit{
			StatPrefix: "cl", MaxConnections: wrapperspb.UInt64(2)})}}}, l.FilterChains[0].Filters...)
	cp.set(l, edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "svc", be))
	startZtunnel(t, cp, proxyOpts{})
	eventually(t, 10*time.Second, func() error {
		c, ok := echoes(t, lAddr)
		if c != nil {
			c.Close()
		}
		if !ok {
			return fmt.Errorf("tcp listener not serving yet")
		}
		return nil
	})
	var held []net.Conn
	for i := range 2 {
		c, ok := echoes(t, lAddr)
		if !ok {
			t.Fatalf("connection %d under the limit not served", i)
		}
		held = append(held, c)
	}
	if _, ok := echoes(t, lAddr); ok {
		t.Fatal("third connection served over max_connections 2")
	}
	held[0].Close()
	eventually(t, 5*time.Second, func() error {
		c, ok := echoes(t, lAddr)
		if !ok {
			return fmt.Errorf("no slot after a connection closed")
		}
		c.Close()
		return nil
	})
}

// TestGlobalMaxConnectionsFlag: --max-connections 1 closes a second
// concurrent connection to any listener.
func TestGlobalMaxConnectionsFlag(t *testing.T) {
	cp := startControlPlane(t)
	be := echoTCP(t)
	lAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cp.set(tcpListener(t, "tcp", lAddr, "svc"), edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "svc", be))
	metrics := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	px := startZtunnel(t, cp, proxyOpts{}, "--max-connections", "1", "--metrics", metrics)
	var first net.Conn
	eventually(t, 10*time.Second, func() error {
		c, ok := echoes(t, lAddr)
		if !ok {
			if c != nil {
				c.Close()
			}
			return fmt.Errorf("tcp listener not serving yet")
		}
		first = c
		return nil
	})
	if _, ok := echoes(t, lAddr); ok {
		t.Fatal("second connection served over --max-connections 1")
	}
	// The refusal is counted under Envoy's name on /stats and on the
	// Prometheus endpoint.
	if _, body := adminDo(t, px, "GET", "/stats?filter=global_cx_overflow"); !strings.Contains(body, "listener.tcp.downstream_global_cx_overflow: 1") {
		t.Errorf("/stats: %q, want listener.tcp.downstream_global_cx_overflow: 1", body)
	}
	if body := httpGetBody(t, "http://"+metrics+"/stats/prometheus"); !strings.Contains(body, `envoy_listener_downstream_global_cx_overflow{envoy_listener_address="tcp"} 1`) {
		t.Errorf("prometheus: no envoy_listener_downstream_global_cx_overflow 1 for listener tcp")
	}
	first.Close()
	eventually(t, 5*time.Second, func() error {
		if c, ok := echoes(t, lAddr); !ok {
			return fmt.Errorf("no slot after the first connection closed")
		} else {
			c.Close()
		}
		return nil
	})
}

// TestOverloadHeapSheds: with --max-heap-bytes far below any real heap,
// every request is answered 503 "envoy overloaded" with x-envoy-overloaded
// and none reaches the backend.
func TestOverloadHeapSheds(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "v1")
	lAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cp.set(httpListener(t, "web", lAddr, "web-routes"), routeConfig("web-routes", routeTo("svc")),
		edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "svc", be.addr))
	startZtunnel(t, cp, proxyOpts{}, "--max-heap-bytes", "1024")
	var resp *http.Response
	eventually(t, 10*time.Second, func() error {
		r, err := h1Client().Get("http://" + lAddr + "/")
		if err != nil {
			return err
		}
		resp = r
		return nil
	})
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 503 || string(body) != "envoy overloaded" || resp.Header.Get("x-envoy-overloaded") != "true" {
		t.Fatalf("got %d %q %v", resp.StatusCode, body, resp.Header)
	}
	if n := be.hits.Load(); n != 0 {
		t.Fatalf("backend saw %d requests while overloaded", n)
	}
}

// TestMaxRequestsPerConnectionHCM: with common_http_protocol_options
// max_requests_per_connection 2, the second response on a connection says
// Connection: close and the client opens a new connection for the third.
func TestMaxRequestsPerConnectionHCM(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "v1")
	lAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	l := httpListener(t, "web", lAddr, "web-routes")
	var hcm hcmv3.HttpConnectionManager
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatal(err)
	}
	hcm.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(2)}
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &hcm)}
	cp.set(l, routeConfig("web-routes", routeTo("svc")),
		edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "svc", be.addr))
	startZtunnel(t, cp, proxyOpts{})
	waitListening(t, lAddr)
	c, err := net.Dial("tcp", lAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	for i := 1; i <= 2; i++ {
		if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Close != (i == 2) {
			t.Fatalf("request %d: %d close=%v", i, resp.StatusCode, resp.Close)
		}
	}
	if _, err := br.ReadByte(); err != io.EOF {
		t.Fatalf("connection open after max_requests_per_connection: %v", err)
	}
}

// httpGetBody fetches url and returns the body of a 200 answer.
func httpGetBody(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}
