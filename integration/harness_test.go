package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// binPath is the ztunnel binary built once for the package.
var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "meshlet-it")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "ztunnel")
	build := exec.Command("go", "build", "-o", binPath, "../cmd/ztunnel")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ztunnel:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ---- control plane ----

// controlPlane is a real go-control-plane ADS server on loopback.
type controlPlane struct {
	t       *testing.T
	addr    string
	cache   cache.SnapshotCache
	grpc    *grpc.Server
	version atomic.Int64

	mu    sync.Mutex
	nacks []string // error_detail messages received
	acks  map[string]string
}

func startControlPlane(t *testing.T) *controlPlane {
	t.Helper()
	return startControlPlaneWith(t)
}

// startControlPlaneWith is startControlPlane with gRPC server options
// (TLS credentials, interceptors).
func startControlPlaneWith(t *testing.T, opts ...grpc.ServerOption) *controlPlane {
	t.Helper()
	cp := &controlPlane{t: t, acks: map[string]string{}}
	cp.cache = cache.NewSnapshotCache(true, allNodes{}, nil)
	cb := server.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoverygrpc.DiscoveryRequest) error {
			cp.observe(r.GetTypeUrl(), r.GetVersionInfo(), r.GetErrorDetail().GetMessage())
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoverygrpc.DeltaDiscoveryRequest) error {
			cp.observe(r.GetTypeUrl(), "", r.GetErrorDetail().GetMessage())
			return nil
		},
	}
	srv := server.NewServer(context.Background(), cp.cache, cb)
	cp.grpc = grpc.NewServer(opts...)
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(cp.grpc, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = lis.Addr().String()
	go func() { _ = cp.grpc.Serve(lis) }()
	t.Cleanup(cp.stop)
	return cp
}

func (cp *controlPlane) stop() { cp.grpc.Stop() }

func (cp *controlPlane) observe(typeURL, version, errMsg string) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if errMsg != "" {
		cp.nacks = append(cp.nacks, errMsg)
	} else if version != "" {
		cp.acks[typeURL] = version
	}
}

func (cp *controlPlane) nackMessages() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.nacks...)
}

// allNodes maps every node to one snapshot.
type allNodes struct{}

func (allNodes) ID(*corev3.Node) string { return "all" }

// set publishes a new snapshot version with the given resources, without
// the consistency check (NACK tests publish broken resources on purpose).
func (cp *controlPlane) set(res ...types.Resource) string {
	cp.t.Helper()
	byType := map[resource.Type][]types.Resource{}
	for _, r := range res {
		var typ string
		switch r.(type) {
		case *listenerv3.Listener:
			typ = resource.ListenerType
		case *routev3.RouteConfiguration:
			typ = resource.RouteType
		case *clusterv3.Cluster:
			typ = resource.ClusterType
		case *endpointv3.ClusterLoadAssignment:
			typ = resource.EndpointType
		default:
			cp.t.Fatalf("unknown resource %T", r)
		}
		byType[typ] = append(byType[typ], r)
	}
	v := fmt.Sprintf("v%d", cp.version.Add(1))
	snap, err := cache.NewSnapshot(v, byType)
	if err != nil {
		cp.t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), "all", snap); err != nil {
		cp.t.Fatal(err)
	}
	return v
}

// ---- the proxy under test ----

type proxy struct {
	t     *testing.T
	cmd   *exec.Cmd
	admin string
	out   *lockedBuf
	done  chan struct{}
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type proxyOpts struct {
	delta bool
	// bootstrapExtra is appended verbatim (static_resources etc).
	bootstrapExtra string
	noReadyWait    bool
	// args are extra command-line flags for "ztunnel run".
	args []string
	// env is added to the proxy's environment (KEY=VALUE).
	env []string
	// adminPort, when set, is the admin port (else a free one).
	adminPort int
}

// startProxy runs the real ztunnel binary against cp and waits until its
// admin /ready answers 200.
func startProxy(t *testing.T, cp *controlPlane, o proxyOpts) *proxy {
	t.Helper()
	adminPort := o.adminPort
	if adminPort == 0 {
		adminPort = freePort(t)
	}
	apiType := "GRPC"
	if o.delta {
		apiType = "DELTA_GRPC"
	}
	boot := fmt.Sprintf(`node:
  id: sidecar~127.0.0.1~test.default~default.svc.cluster.local
  cluster: test
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: %d}}
`, adminPort)
	if cp != nil {
		boot += fmt.Sprintf(`dynamic_resources:
  ads_config:
    api_type: %s
    transport_api_version: V3
    grpc_services:
    - google_grpc: {target_uri: "%s", stat_prefix: ads}
  lds_config: {ads: {}, resource_api_version: V3}
  cds_config: {ads: {}, resource_api_version: V3}
`, apiType, cp.addr)
	}
	boot += o.bootstrapExtra
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(boot), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, admin: fmt.Sprintf("127.0.0.1:%d", adminPort), out: &lockedBuf{}, done: make(chan struct{})}
	p.cmd = exec.Command(binPath, append([]string{"run", "--bootstrap", path, "--debug-headers", "--drain-time", "3s"}, o.args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if len(o.env) > 0 {
		p.cmd.Env = append(os.Environ(), o.env...)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(os.Interrupt)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("ztunnel output:\n%s", p.out.String())
		}
	})
	if !o.noReadyWait {
		p.waitReady()
	}
	return p
}

func (p *proxy) waitReady() {
	p.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			p.t.Fatalf("ztunnel exited before ready:\n%s", p.out.String())
		default:
		}
		resp, err := http.Get("http://" + p.admin + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.t.Fatalf("ztunnel not ready after 15s:\n%s", p.out.String())
}

// freePort returns a loopback port that is free now and that no other
// freePort call of this process returned. Ports come from below the
// kernel's ephemeral range (32768 up), so a socket that some test binds to
// port 0 meanwhile cannot take one before the process it was meant for
// binds it; handing each port out once keeps two proxies of one test from
// getting the same one (both happened with ports from bind(0)).
func freePort(t *testing.T) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	if nextPort == 0 {
		nextPort = portLow + os.Getpid()%(portHigh-portLow)
	}
	for range portHigh - portLow {
		p := nextPort
		if nextPort++; nextPort >= portHigh {
			nextPort = portLow
		}
		if portUsed[p] {
			continue
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		portUsed[p] = true
		return p
	}
	t.Fatal("no free loopback port left")
	return 0
}

const portLow, portHigh = 20000, 32000

var (
	portMu   sync.Mutex
	nextPort int
	portUsed = map[int]bool{}
)

// ---- backends ----

// backend is an HTTP/1.1 + h2c server that names itself in every response.
type backend struct {
	name  string
	addr  string
	hits  atomic.Int64
	conns atomic.Int64
	delay atomic.Int64 // nanoseconds added to every response
	srv   *http.Server
}

func startBackend(t *testing.T, name string) *backend {
	t.Helper()
	b := &backend{name: name}
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		w.Header().Set("x-backend", name)
		if d := b.delay.Load(); d > 0 {
			time.Sleep(time.Duration(d))
		}
		if d := r.Header.Get("x-delay"); d != "" {
			if dur, err := time.ParseDuration(d); err == nil {
				time.Sleep(dur)
			}
		}
		body, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %s %s body=%d", name, r.Proto, r.Method, r.URL.RequestURI(), len(body))
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = lis.Addr().String()
	protos := new(http.Protocols)
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true) // h2c prior knowledge, for HTTP/2 clusters
	b.srv = &http.Server{
		Handler:   mux,
		Protocols: protos,
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				b.conns.Add(1)
			}
		},
	}
	go func() { _ = b.srv.Serve(lis) }()
	t.Cleanup(func() { b.srv.Close() })
	return b
}

// ---- resource builders ----

func anyOf(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// httpListener is an LDS listener on addr whose HCM takes routes from RDS.
func httpListener(t *testing.T, name, addr, rdsName string) *listenerv3.Listener {
	t.Helper()
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: rdsName,
			ConfigSource: &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			},
		}},
		HttpFilters: []*hcmv3.HttpFilter{{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})},
		}},
	}
	return listenerOn(t, name, addr, &listenerv3.Filter{
		Name:       "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)},
	})
}

// tcpListener is an LDS listener on addr proxying TCP to cluster.
func tcpListener(t *testing.T, name, addr, cluster string) *listenerv3.Listener {
	t.Helper()
	tp := &tcpv3.TcpProxy{StatPrefix: name, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}}
	return listenerOn(t, name, addr, &listenerv3.Filter{
		Name:       "envoy.filters.network.tcp_proxy",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, tp)},
	})
}

func listenerOn(t *testing.T, name, addr string, f *listenerv3.Filter) *listenerv3.Listener {
	t.Helper()
	host, port := splitHostPort(t, addr)
	return &listenerv3.Listener{
		Name:         name,
		Address:      socketAddr(host, port),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{f}}},
	}
}

func socketAddr(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func splitHostPort(t *testing.T, addr string) (string, uint32) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	var port uint32
	fmt.Sscan(p, &port)
	return h, port
}

// edsCluster is a CDS cluster fed by EDS over ADS.
func edsCluster(name string, policy clusterv3.Cluster_LbPolicy, http2 bool) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		LbPolicy:             policy,
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ResourceApiVersion:    corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}},
	}
	if http2 {
		opts := &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		}}
		a, _ := anypb.New(opts)
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": a}
	}
	return c
}

// endpoints is a CLA with one locality holding addrs.
func endpoints(t *testing.T, cluster string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	var lbe []*endpointv3.LbEndpoint
	for _, a := range addrs {
		h, p := splitHostPort(t, a)
		lbe = append(lbe, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{
			Endpoint: &endpointv3.Endpoint{Address: socketAddr(h, p)},
		}})
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: cluster,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbe}},
	}
}

// routeTo is a catch-all route to one cluster.
func routeTo(cluster string) *routev3.Route {
	return &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
	}
}

// weightedRoute splits a catch-all route between clusters by weight.
func weightedRoute(weights map[string]uint32, order ...string) *routev3.Route {
	var wcs []*routev3.WeightedCluster_ClusterWeight
	for _, n := range order {
		wcs = append(wcs, &routev3.WeightedCluster_ClusterWeight{Name: n, Weight: wrapperspb.UInt32(weights[n])})
	}
	return &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
			WeightedClusters: &routev3.WeightedCluster{Clusters: wcs},
		}}},
	}
}

func routeConfig(name string, routes ...*routev3.Route) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name:         name,
		VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: routes}},
	}
}

// ---- clients ----

// h1Client returns an HTTP/1.1 client with keep-alive.
func h1Client() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64, ForceAttemptHTTP2: false}}
}

// h2cClient returns an HTTP/2 prior-knowledge client.
func h2cClient() *http.Client {
	protos := new(http.Protocols)
	protos.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: protos}}
}

// get does one request and returns status, x-backend header and body.
func get(c *http.Client, url string, hdr map[string]string) (int, string, string, error) {
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		return 0, "", "", err
	}
	for k, v := range hdr {
		if k == "host" {
			req.Host = v
			continue
		}
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("x-backend"), string(body), err
}

// eventually retries fn until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = fn(); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("condition not met after %v: %v", timeout, err)
}
