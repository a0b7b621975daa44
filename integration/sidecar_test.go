package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	originaldstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The sidecar tests feed meshlet the listeners istiod generates for a
// sidecar (names and shapes as in an Envoy config_dump of istio-proxy):
//
//   - virtualOutbound 0.0.0.0:15001, use_original_dst, a blackhole chain for
//     connections to 15001 itself and a catch-all tcp_proxy to
//     PassthroughCluster;
//   - 0.0.0.0_8080, bind_to_port false: an HCM for HTTP (RDS "8080", virtual
//     hosts by Host, allow_any last) and PassthroughFilterChain for the rest;
//   - virtualInbound 0.0.0.0:15006 with the original_dst listener filter
//     (no use_original_dst), a blackhole chain for 15006, a chain per
//     service port by destination_port (here an HTTP one for 9090) and the
//     "virtualInbound" passthrough chain to InboundPassthroughClusterIpv4.
const (
	scSvc     = "srv.default.svc.cluster.local"
	scCluster = "outbound|8080||" + scSvc
	scVIP     = "10.96.77.10" // the service's ClusterIP; no host has it
)

func tcpProxyFilter(t *testing.T, stat, cluster string) *listenerv3.Filter {
	t.Helper()
	return &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{
		TypedConfig: anyOf(t, &tcpv3.TcpProxy{StatPrefix: stat, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}}),
	}}
}

func hcmFilter(t *testing.T, hcm *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	t.Helper()
	hcm.HttpFilters = []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})}}}
	return &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}}
}

func originalDstCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(2 * time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
	}
}

func withHeader(r *routev3.Route, k, v string) *routev3.Route {
	r.RequestHeadersToAdd = append(r.RequestHeadersToAdd, &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}})
	return r
}

// sidecarResources is the istiod-shaped configuration for a pod whose app
// serves HTTP on 9090, calling the service srv on 8080 at scVIP.
func sidecarResources(t *testing.T, srvEndpoint string) []types.Resource {
	t.Helper()
	rds := &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "8080", ConfigSource: &corev3.ConfigSource{
		ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}}}
	virtualOutbound := &listenerv3.Listener{
		Name:             "virtualOutbound",
		Address:          socketAddr("0.0.0.0", 15001),
		UseOriginalDst:   wrapperspb.Bool(true),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		FilterChains: []*listenerv3.FilterChain{
			{
				Name:             "virtualOutbound-blackhole",
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(15001)},
				Filters:          []*listenerv3.Filter{tcpProxyFilter(t, "BlackHoleCluster", "BlackHoleCluster")},
			},
			{Name: "virtualOutbound-catchall-tcp", Filters: []*listenerv3.Filter{tcpProxyFilter(t, "PassthroughCluster", "PassthroughCluster")}},
		},
	}
	outbound8080 := &listenerv3.Listener{
		Name:             "0.0.0.0_8080",
		Address:          socketAddr("0.0.0.0", 8080),
		BindToPort:       wrapperspb.Bool(false),
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		ListenerFilters: []*listenerv3.ListenerFilter{
			{Name: "envoy.filters.listener.tls_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: anyOf(t, &tlsinspectorv3.TlsInspector{})}},
			{Name: "envoy.filters.listener.http_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: anyOf(t, &httpinspectorv3.HttpInspector{})}},
		},
		FilterChains: []*listenerv3.FilterChain{{
			FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer", ApplicationProtocols: []string{"http/1.1", "h2c"}},
			Filters:          []*listenerv3.Filter{hcmFilter(t, &hcmv3.HttpConnectionManager{StatPrefix: "outbound_0.0.0.0_8080", RouteSpecifier: rds})},
		}},
		DefaultFilterChain: &listenerv3.FilterChain{
			Name:    "PassthroughFilterChain",
			Filters: []*listenerv3.Filter{tcpProxyFilter(t, "PassthroughCluster", "PassthroughCluster")},
		},
	}
	routes8080 := &routev3.RouteConfiguration{
		Name:             "8080",
		ValidateClusters: wrapperspb.Bool(false),
		VirtualHosts: []*routev3.VirtualHost{
			{
				Name: scSvc + ":8080",
				Domains: []string{scSvc, scSvc + ":8080", "srv", "srv:8080", "srv.default.svc", "srv.default.svc:8080",
					"srv.default", "srv.default:8080", scVIP, scVIP + ":8080"},
				Routes: []*routev3.Route{withHeader(routeTo(scCluster), "x-mesh-route", "sidecar-8080")},
			},
			{Name: "allow_any", Domains: []string{"*"}, Routes: []*routev3.Route{routeTo("PassthroughCluster")}},
		},
	}
	inboundRoutes := &routev3.RouteConfiguration{
		Name: "inbound|9090||",
		VirtualHosts: []*routev3.VirtualHost{{
			Name: "inbound|http|9090", Domains: []string{"*"},
			Routes: []*routev3.Route{withHeader(routeTo("inbound|9090||"), "x-inbound-chain", "9090")},
		}},
	}
	virtualInbound := &listenerv3.Listener{
		Name:             "virtualInbound",
		Address:          socketAddr("0.0.0.0", 15006),
		TrafficDirection: corev3.TrafficDirection_INBOUND,
		ListenerFilters: []*listenerv3.ListenerFilter{
			{Name: "envoy.filters.listener.original_dst", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: anyOf(t, &originaldstv3.OriginalDst{})}},
			{Name: "envoy.filters.listener.tls_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: anyOf(t, &tlsinspectorv3.TlsInspector{})}},
			{Name: "envoy.filters.listener.http_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: anyOf(t, &httpinspectorv3.HttpInspector{})}},
		},
		ListenerFiltersTimeout:           durationpb.New(0),
		ContinueOnListenerFiltersTimeout: true,
		FilterChains: []*listenerv3.FilterChain{
			{
				Name:             "virtualInbound-blackhole",
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(15006)},
				Filters:          []*listenerv3.Filter{tcpProxyFilter(t, "BlackHoleCluster", "BlackHoleCluster")},
			},
			{
				Name:             "0.0.0.0_9090",
				FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(9090), TransportProtocol: "raw_buffer"},
				Filters: []*listenerv3.Filter{hcmFilter(t, &hcmv3.HttpConnectionManager{
					StatPrefix:     "inbound_0.0.0.0_9090",
					RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: inboundRoutes},
				})},
			},
			{
				Name: "virtualInbound",
				FilterChainMatch: &listenerv3.FilterChainMatch{
					PrefixRanges:      []*corev3.CidrRange{{AddressPrefix: "0.0.0.0", PrefixLen: wrapperspb.UInt32(0)}},
					TransportProtocol: "raw_buffer",
				},
				Filters: []*listenerv3.Filter{tcpProxyFilter(t, "InboundPassthroughClusterIpv4", "InboundPassthroughClusterIpv4")},
			},
		},
	}
	blackhole := &clusterv3.Cluster{
		Name:                 "BlackHoleCluster",
		ConnectTimeout:       durationpb.New(10 * time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
	}
	return []types.Resource{
		virtualOutbound, outbound8080, routes8080, virtualInbound,
		originalDstCluster("PassthroughCluster"), originalDstCluster("InboundPassthroughClusterIpv4"),
		originalDstCluster("inbound|9090||"), blackhole,
		edsCluster(scCluster, clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, scCluster, srvEndpoint),
	}
}

// TestSidecarIstiodListeners runs the binary in a pod namespace with
// iptables capture and the istiod-shaped listeners above over ADS, for both
// inbound capture modes (REDIRECT, and TPROXY with 15006 opened
// IP_TRANSPARENT by --capture-inbound=tproxy). The proxy runs as root like
// the test's clients, so only the 0x539 mark on its own sockets keeps them
// from being captured again.
func TestSidecarIstiodListeners(t *testing.T) {
	for _, inbound := range []string{"redirect", "tproxy"} {
		t.Run(inbound, func(t *testing.T) {
			requireCapturePriv(t)
			requireNetns(t)
			t.Parallel()
			testSidecarIstiod(t, inbound)
		})
	}
}

func testSidecarIstiod(t *testing.T, inbound string) {
	p := newNSPair(t) // a: the pod, b: the rest of the cluster
	// Service VIPs are routed off the pod like a cluster's ClusterIPs;
	// capture redirects them before they leave.
	if err := ipCmd("-n", p.a, "route", "add", "10.96.0.0/16", "via", p.bIP); err != nil {
		netnsFatal(t, "route: %v", err)
	}

	listenIn := func(ns, addr string) net.Listener {
		var ln net.Listener
		if err := inNetns(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
			netnsFatal(t, "listen %s in %s: %v", addr, ns, err)
		}
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	serveHTTP := func(ln net.Listener, name string) {
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s host=%s route=%q inbound=%q from=%s", name, r.Host,
				r.Header.Get("x-mesh-route"), r.Header.Get("x-inbound-chain"), r.RemoteAddr)
		})}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { srv.Close() })
	}
	serveTCP := func(ln net.Listener, name string) {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				// Client speaks first: virtualInbound's inspectors wait for
				// the first bytes (listener_filters_timeout 0s), as in Envoy.
				go func() {
					defer c.Close()
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
						return
					}
					host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
					fmt.Fprintf(c, "%s from %s\n", name, host)
				}()
			}
		}()
	}
	serveHTTP(listenIn(p.b, p.bIP+":8080"), "srv")
	serveTCP(listenIn(p.b, p.bIP+":7070"), "tcp7070")
	serveHTTP(listenIn(p.a, "0.0.0.0:9090"), "app9090")
	serveTCP(listenIn(p.a, "0.0.0.0:9191"), "app9191")

	cp := startControlPlane(t)
	cp.set(sidecarResources(t, p.bIP+":8080")...)
	xdsLis := listenIn(p.a, "127.0.0.1:0") // loopback: never captured
	go func() { _ = cp.grpc.Serve(xdsLis) }()

	boot := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(boot, fmt.Appendf(nil, `node: {id: sidecar~%s~app.default~default.svc.cluster.local, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 15000}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{google_grpc: {target_uri: "%s", stat_prefix: ads}}]
  lds_config: {ads: {}, resource_api_version: V3}
  cds_config: {ads: {}, resource_api_version: V3}
`, p.aIP, xdsLis.Addr().String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &lockedBuf{}
	cmd := exec.Command("ip", "netns", "exec", p.a, binPath, "run", "--bootstrap", boot,
		"--capture", "iptables", "--capture-inbound", inbound, "--capture-uid", "4242", "--capture-gid", "4242",
		"--metrics", "", "--drain-time", "1s")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("ztunnel output:\n%s", out.String())
		}
	})
	app := nsClient(p.a)  // the app's own client: uid 0, unmarked
	peer := nsClient(p.b) // another pod calling this one
	eventually(t, 15*time.Second, func() error {
		if !strings.Contains(out.String(), "capture installed") {
			return fmt.Errorf("capture not installed")
		}
		resp, err := app.Get("http://127.0.0.1:15000/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("ready: %d", resp.StatusCode)
		}
		return nil
	})

	httpGet := func(c *http.Client, url string) string {
		t.Helper()
		resp, err := c.Get(url)
		if err != nil {
			t.Errorf("GET %s: %v", url, err)
			return ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	tcpRead := func(ns, addr string) string {
		t.Helper()
		var line string
		err := inNetns(ns, func() error {
			c, err := net.DialTimeout("tcp", addr, 3*time.Second)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.WriteString(c, "hello\n"); err != nil {
				return err
			}
			line, err = bufio.NewReader(c).ReadString('\n')
			return err
		})
		if err != nil {
			t.Errorf("tcp %s from %s: %v", addr, ns, err)
		}
		return strings.TrimSpace(line)
	}

	for _, tc := range []struct {
		name, got, want string
	}{
		// Outbound HTTP to the service VIP: the per-port listener's route
		// chosen by Host sends it to srv's endpoint and adds its header.
		{"outbound VIP by Host", httpGet(app, "http://"+scVIP+":8080/a"), `200 srv host=` + scVIP + `:8080 route="sidecar-8080" inbound="" from=` + p.aIP},
		// The same port with a Host no service has: allow_any passes it
		// through to where it was headed, without the route's header.
		{"outbound allow_any", httpGet(app, "http://"+p.bIP+":8080/b"), `200 srv host=` + p.bIP + `:8080 route="" inbound="" from=` + p.aIP},
		// A port with no listener: virtualOutbound's catch-all passes the
		// connection through (and it does not come back: it is marked).
		{"outbound passthrough", tcpRead(p.a, p.bIP+":7070"), "tcp7070 from " + p.aIP},
		// Inbound to the app's HTTP port: virtualInbound's 9090 chain,
		// found by the original destination port, adds its header.
		{"inbound by destination_port", httpGet(peer, "http://"+p.aIP+":9090/c"), `200 app9090 host=` + p.aIP + `:9090 route="" inbound="9090"`},
		// Inbound to another port: the passthrough chain.
		{"inbound passthrough", tcpRead(p.b, p.aIP+":9191"), "app9191 from " + p.aIP},
	} {
		if !strings.HasPrefix(tc.got, tc.want) {
			t.Errorf("%s: got %q, want %q...", tc.name, tc.got, tc.want)
		}
	}
	if !t.Failed() && !strings.Contains(run(t, "ip", "netns", "exec", p.a, "iptables-save"), "MESHLET") {
		t.Fatal("no MESHLET rules while running")
	}

	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("ztunnel did not exit on SIGTERM")
	}
	if left := run(t, "ip", "netns", "exec", p.a, "sh", "-c", "iptables-save; ip6tables-save; ip rule"); strings.Contains(left, "MESHLET") || strings.Contains(left, "lookup 133") {
		t.Fatalf("capture left behind after exit:\n%s", left)
	}
}
