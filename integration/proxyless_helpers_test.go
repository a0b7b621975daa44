package integration

// Helpers for the grpc-go proxyless comparison tests (proxyless_test.go).
//
// Each comparison gives one set of xDS resources to two clients:
//   - a grpc-go client dialing xds:///<target>, whose xDS client talks to
//     the same go-control-plane server as meshlet (gRFC A27 bootstrap);
//   - a plain grpc-go client dialing meshlet's HTTP listener on loopback.
//
// Both listeners carry the same HttpConnectionManager message (the grpc-go
// one as an api_listener named after the target, meshlet's on a socket
// address) pointing at the same RouteConfiguration, Clusters and
// ClusterLoadAssignments.
//
// The control plane here keys snapshots by node: meshlet rejects LDS
// listeners that carry an api_listener (Envoy instead ignores them with a
// warning), so the grpc-go node's snapshot is meshlet's plus the
// api_listener. Every other resource is the same Go value in both.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
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
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// proxylessNodeID is the node id of every grpc-go xDS client in these tests;
// the control plane serves it the snapshot with the api_listener.
const proxylessNodeID = "proxyless-grpc-go"

// proxylessCP is a go-control-plane ADS server with one snapshot for
// grpc-go clients and one for meshlet.
type proxylessCP struct {
	t       *testing.T
	addr    string
	cache   cache.SnapshotCache
	version atomic.Int64

	mu    sync.Mutex
	nacks []string
}

type proxylessHash struct{}

func (proxylessHash) ID(n *corev3.Node) string {
	if n.GetId() == proxylessNodeID {
		return "grpc"
	}
	return "meshlet"
}

func startProxylessCP(t *testing.T) *proxylessCP {
	t.Helper()
	cp := &proxylessCP{t: t, cache: cache.NewSnapshotCache(true, proxylessHash{}, nil)}
	cb := server.CallbackFuncs{StreamRequestFunc: func(_ int64, r *discoverygrpc.DiscoveryRequest) error {
		if msg := r.GetErrorDetail().GetMessage(); msg != "" {
			cp.mu.Lock()
			cp.nacks = append(cp.nacks, fmt.Sprintf("node %s: %s: %s", r.GetNode().GetId(), r.GetTypeUrl(), msg))
			cp.mu.Unlock()
		}
		return nil
	}}
	gs := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, server.NewServer(context.Background(), cp.cache, cb))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cp.addr = lis.Addr().String()
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return cp
}

// controlPlane returns the harness view startProxy needs (only addr is read).
func (cp *proxylessCP) controlPlane() *controlPlane {
	return &controlPlane{t: cp.t, addr: cp.addr}
}

func (cp *proxylessCP) nackMessages() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]string(nil), cp.nacks...)
}

// set publishes shared to both nodes, plus apiListener to grpc-go and
// meshListener to meshlet.
func (cp *proxylessCP) set(apiListener, meshListener *listenerv3.Listener, shared ...types.Resource) {
	cp.t.Helper()
	v := fmt.Sprintf("v%d", cp.version.Add(1))
	for key, l := range map[string]*listenerv3.Listener{"grpc": apiListener, "meshlet": meshListener} {
		byType := map[resource.Type][]types.Resource{resource.ListenerType: {l}}
		for _, r := range shared {
			var typ string
			switch r.(type) {
			case *routev3.RouteConfiguration:
				typ = resource.RouteType
			case *clusterv3.Cluster:
				typ = resource.ClusterType
			case *endpointv3.ClusterLoadAssignment:
				typ = resource.EndpointType
			default:
				cp.t.Fatalf("unexpected shared resource %T", r)
			}
			byType[typ] = append(byType[typ], r)
		}
		snap, err := cache.NewSnapshot(v, byType)
		if err != nil {
			cp.t.Fatal(err)
		}
		if err := cp.cache.SetSnapshot(context.Background(), key, snap); err != nil {
			cp.t.Fatal(err)
		}
	}
}

// proxylessHCM is the HttpConnectionManager both listeners carry: RDS over
// ADS for rdsName, filters then the router.
func proxylessHCM(t *testing.T, rdsName string, filters ...*hcmv3.HttpFilter) *hcmv3.HttpConnectionManager {
	t.Helper()
	return &hcmv3.HttpConnectionManager{
		StatPrefix: "proxyless",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: rdsName,
			ConfigSource: &corev3.ConfigSource{
				ResourceApiVersion:    corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			},
		}},
		HttpFilters: append(append([]*hcmv3.HttpFilter(nil), filters...), &hcmv3.HttpFilter{
			Name:       "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})},
		}),
	}
}

// ---- the rig: control plane, meshlet, and the two clients ----

// proxylessSetup is what a comparison configures: HTTP filters, the one
// virtual host, and clusters (each an EDS cluster, HTTP/2 upstream).
type proxylessSetup struct {
	filters  []*hcmv3.HttpFilter
	vhost    *routev3.VirtualHost
	clusters []*clusterv3.Cluster
	cla      []*endpointv3.ClusterLoadAssignment
}

type proxylessRig struct {
	t        *testing.T
	cp       *proxylessCP
	target   string // LDS name grpc-go resolves
	listener string // meshlet's listener address
	xdsCC    *grpc.ClientConn
	meshCC   *grpc.ClientConn
}

// proxylessCluster is an EDS cluster speaking HTTP/2 upstream (what meshlet
// needs for gRPC; grpc-go ignores the protocol options).
func proxylessCluster(name string, edit func(c *clusterv3.Cluster)) *clusterv3.Cluster {
	c := edsCluster(name, clusterv3.Cluster_ROUND_ROBIN, true)
	// Envoy's default of 3 concurrent retries would turn retries into UO
	// overflows under the tests' concurrent load; grpc-go has no such cap.
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxRetries: wrapperspb.UInt32(1000),
	}}}
	if edit != nil {
		edit(c)
	}
	return c
}

// pgEndpoints is a CLA with one locality holding addrs. grpc-go NACKs a
// locality without an ID and drops one without load_balancing_weight, both
// of which Envoy (and meshlet) accept, so the locality carries both.
// hostname, when set, is every endpoint's EDS hostname (gRFC A81).
func pgEndpoints(t *testing.T, cluster, hostname string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	t.Helper()
	loc := &endpointv3.LocalityLbEndpoints{
		Locality:            &corev3.Locality{Region: "test", Zone: "loopback"},
		LoadBalancingWeight: wrapperspb.UInt32(1),
	}
	for _, addr := range addrs {
		h, p := splitHostPort(t, addr)
		loc.LbEndpoints = append(loc.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: socketAddr(h, p), Hostname: hostname,
			}},
		})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: cluster, Endpoints: []*endpointv3.LocalityLbEndpoints{loc}}
}

// startProxyless publishes s, starts meshlet, and dials both clients. The
// grpc-go client is built in this process unless xdsClient is false (the
// auto_host_rewrite test runs it in a child process).
func startProxyless(t *testing.T, s proxylessSetup, xdsClient bool) *proxylessRig {
	t.Helper()
	r := &proxylessRig{t: t, cp: startProxylessCP(t), target: "svc.proxyless.test"}
	r.listener = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	hcm := proxylessHCM(t, "proxyless-routes", s.filters...)
	api := &listenerv3.Listener{
		Name:        r.target,
		ApiListener: &listenerv3.ApiListener{ApiListener: anyOf(t, hcm)},
	}
	mesh := listenerOn(t, "proxyless", r.listener, &listenerv3.Filter{
		Name:       "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)},
	})
	shared := []types.Resource{&routev3.RouteConfiguration{
		Name: "proxyless-routes", VirtualHosts: []*routev3.VirtualHost{s.vhost},
	}}
	for _, c := range s.clusters {
		shared = append(shared, c)
	}
	for _, c := range s.cla {
		shared = append(shared, c)
	}
	r.cp.set(api, mesh, shared...)
	startProxy(t, r.cp.controlPlane(), proxyOpts{})
	waitListening(t, r.listener)

	var err error
	r.meshCC, err = grpc.NewClient(r.listener, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.meshCC.Close() })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("NACKs: %q", r.cp.nackMessages())
		}
	})
	if xdsClient {
		r.xdsCC = dialXDS(t, r.cp.addr, r.target)
	}
	return r
}

// proxylessBootstrap is a gRFC A27 bootstrap pointing at the control plane;
// trusted_xds_server lets grpc-go honour auto_host_rewrite (A81).
func proxylessBootstrap(cpAddr string) []byte {
	return fmt.Appendf(nil, `{
  "xds_servers": [{
    "server_uri": %q,
    "channel_creds": [{"type": "insecure"}],
    "server_features": ["xds_v3", "trusted_xds_server"]
  }],
  "node": {"id": %q, "cluster": "proxyless"}
}`, cpAddr, proxylessNodeID)
}

// dialXDS returns a grpc-go client for xds:///target with its own xDS
// client, and waits until it is READY (resources resolved, a subchannel up).
func dialXDS(t *testing.T, cpAddr, target string) *grpc.ClientConn {
	t.Helper()
	builder, err := xds.NewXDSResolverWithConfigForTesting(proxylessBootstrap(cpAddr))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///"+target, grpc.WithResolvers(builder),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	waitConnReady(t, cc)
	return cc
}

func waitConnReady(t *testing.T, cc *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc.Connect()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(ctx, s) {
			t.Fatalf("%s: not READY after 10s (state %v)", cc.Target(), s)
		}
	}
}

// clients names the two clients of a rig for table loops.
func (r *proxylessRig) clients() []struct {
	name string
	cc   *grpc.ClientConn
} {
	return []struct {
		name string
		cc   *grpc.ClientConn
	}{{"grpc-go xds", r.xdsCC}, {"meshlet", r.meshCC}}
}

// waitMeshRoutes waits until a call through meshlet reaches a backend (the
// listener can be bound before RDS/CDS/EDS have arrived).
func (r *proxylessRig) waitMeshRoutes() {
	r.t.Helper()
	tc := testgrpc.NewTestServiceClient(r.meshCC)
	eventually(r.t, 10*time.Second, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var hdr metadata.MD
		_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&hdr))
		if len(hdr.Get("x-backend")) == 0 {
			return fmt.Errorf("no backend answered: %v", err)
		}
		return nil
	})
}

// ---- backend ----

// pgBackend is the interop TestService that names itself (x-backend),
// echoes the :authority it saw (x-authority), counts attempts, and can fail
// attempts with UNAVAILABLE or sleep, as the test sets.
type pgBackend struct {
	name     string
	addr     string
	attempts atomic.Int64
	// failPermille of attempts end UNAVAILABLE (independently at random).
	failPermille atomic.Int64
	sleep        atomic.Int64 // nanoseconds before answering
	// headersBeforeFail sends response headers before a failure status, so
	// the status arrives in trailers and the response has started.
	headersBeforeFail atomic.Bool
}

func startPGBackend(t *testing.T, name string) *pgBackend {
	t.Helper()
	b := &pgBackend{name: name}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.addr = lis.Addr().String()
	s := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		b.attempts.Add(1)
		if d := time.Duration(b.sleep.Load()); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil, status.FromContextError(ctx.Err()).Err()
			}
		}
		md, _ := metadata.FromIncomingContext(ctx)
		hdr := metadata.Pairs("x-backend", name, "x-authority", strings.Join(md.Get(":authority"), ","))
		if rand.Int64N(1000) < b.failPermille.Load() {
			// Header metadata makes grpc-go send a HEADERS frame before
			// the status; without it the failure is trailers-only.
			if b.headersBeforeFail.Load() {
				_ = grpc.SendHeader(ctx, hdr)
			}
			return nil, status.Error(codes.Unavailable, "backend "+name+" failed this attempt")
		}
		_ = grpc.SetHeader(ctx, hdr)
		return h(ctx, req)
	}))
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return b
}

// ---- load ----

// callOutcome is what one unary call saw.
type callOutcome struct {
	code    codes.Code
	backend string
	took    time.Duration
}

// unaryLoad makes n UnaryCalls over cc with 8 workers, each call with
// timeout (0 = no deadline), and returns the outcomes.
func unaryLoad(cc *grpc.ClientConn, n int, timeout time.Duration) []callOutcome {
	tc := testgrpc.NewTestServiceClient(cc)
	out := make([]callOutcome, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				ctx, cancel := context.Background(), context.CancelFunc(func() {})
				if timeout > 0 {
					ctx, cancel = context.WithTimeout(ctx, timeout)
				}
				var hdr metadata.MD
				start := time.Now()
				_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&hdr))
				out[i] = callOutcome{code: status.Code(err), backend: strings.Join(hdr.Get("x-backend"), ","), took: time.Since(start)}
				cancel()
			}
		})
	}
	wg.Wait()
	return out
}

// countBy tallies outcomes by key.
func countBy(outs []callOutcome, key func(callOutcome) string) map[string]int {
	m := map[string]int{}
	for _, o := range outs {
		m[key(o)]++
	}
	return m
}
