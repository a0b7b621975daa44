package xds

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxy "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

const testNodeID = "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local"

// controlPlane is a real go-control-plane ADS server (snapshot cache, SotW
// and delta) on loopback that records every request it receives.
type controlPlane struct {
	t     *testing.T
	cache cachev3.SnapshotCache
	// extra serves testExtraType, a type the client does not know, beside
	// the snapshot cache's Envoy types.
	extra *cachev3.LinearCache
	addr  string
	// streams counts the ADS streams opened (SotW and delta).
	streams atomic.Int64

	mu       sync.Mutex
	requests []*discovery.DiscoveryRequest
	deltas   []*discovery.DeltaDiscoveryRequest

	srv    *grpc.Server
	cancel context.CancelFunc
	done   chan struct{}
}

// startControlPlane listens on addr ("127.0.0.1:0" for a fresh port) and
// serves until stop or the end of the test.
func startControlPlane(t *testing.T, addr string) *controlPlane {
	t.Helper()
	cp := &controlPlane{t: t, cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil), extra: cachev3.NewLinearCache(testExtraType)}
	cp.serve(addr)
	t.Cleanup(cp.stop)
	return cp
}

func (cp *controlPlane) serve(addr string) {
	cp.t.Helper()
	var lis net.Listener
	var err error
	// After a restart the old port may linger briefly; retry a bounded time.
	for i := 0; i < 50; i++ {
		if lis, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		cp.t.Fatalf("listen %s: %v", addr, err)
	}
	cp.addr = lis.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	cb := serverv3.CallbackFuncs{
		StreamOpenFunc:      func(context.Context, int64, string) error { cp.streams.Add(1); return nil },
		DeltaStreamOpenFunc: func(context.Context, int64, string) error { cp.streams.Add(1); return nil },
		StreamRequestFunc: func(_ int64, r *discovery.DiscoveryRequest) error {
			cp.mu.Lock()
			cp.requests = append(cp.requests, proto.Clone(r).(*discovery.DiscoveryRequest))
			cp.mu.Unlock()
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discovery.DeltaDiscoveryRequest) error {
			cp.mu.Lock()
			cp.deltas = append(cp.deltas, proto.Clone(r).(*discovery.DeltaDiscoveryRequest))
			cp.mu.Unlock()
			return nil
		},
	}
	mux := &cachev3.MuxCache{
		Classify:      func(r *cachev3.Request) string { return classify(r.GetTypeUrl()) },
		ClassifyDelta: func(r *cachev3.DeltaRequest) string { return classify(r.GetTypeUrl()) },
		Caches:        map[string]cachev3.Cache{"snapshot": cp.cache, "extra": cp.extra},
	}
	xs := serverv3.NewServer(ctx, mux, cb)
	srv := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(srv, xs)
	cp.srv, cp.cancel, cp.done = srv, cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		_ = srv.Serve(lis)
	}(cp.done)
}

// testExtraType is a resource type only extra-type tests subscribe to.
const testExtraType = "type.googleapis.com/google.protobuf.StringValue"

func classify(typeURL string) string {
	if typeURL == testExtraType {
		return "extra"
	}
	return "snapshot"
}

// stop closes the server and every stream on it. It may be called twice.
func (cp *controlPlane) stop() {
	if cp.srv == nil {
		return
	}
	cp.cancel()
	cp.srv.Stop()
	<-cp.done
	cp.srv = nil
}

// restart stops the server and serves again on the same address with the
// same cache, as a control plane restarting would.
func (cp *controlPlane) restart() {
	cp.stop()
	cp.serve(cp.addr)
}

func (cp *controlPlane) set(version string, res map[resourcev3.Type][]types.Resource) {
	cp.t.Helper()
	snap, err := cachev3.NewSnapshot(version, res)
	if err != nil {
		cp.t.Fatal(err)
	}
	if err := cp.cache.SetSnapshot(context.Background(), testNodeID, snap); err != nil {
		cp.t.Fatal(err)
	}
}

// sotwRequests returns the SotW requests seen so far for typeURL.
func (cp *controlPlane) sotwRequests(typeURL string) []*discovery.DiscoveryRequest {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var out []*discovery.DiscoveryRequest
	for _, r := range cp.requests {
		if r.GetTypeUrl() == typeURL {
			out = append(out, r)
		}
	}
	return out
}

func (cp *controlPlane) deltaRequests(typeURL string) []*discovery.DeltaDiscoveryRequest {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var out []*discovery.DeltaDiscoveryRequest
	for _, r := range cp.deltas {
		if r.GetTypeUrl() == typeURL {
			out = append(out, r)
		}
	}
	return out
}

// nackMessages returns the error_detail messages of every NACK received.
func (cp *controlPlane) nackMessages() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var out []string
	for _, r := range cp.requests {
		if r.GetErrorDetail() != nil {
			out = append(out, r.GetErrorDetail().GetMessage())
		}
	}
	for _, r := range cp.deltas {
		if r.GetErrorDetail() != nil {
			out = append(out, r.GetErrorDetail().GetMessage())
		}
	}
	return out
}

// Resource builders.

func ads() *core.ConfigSource {
	return &core.ConfigSource{
		ResourceApiVersion:    core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
	}
}

func sockAddr(ip string, port uint32) *core.Address {
	return &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
		Address: ip, PortSpecifier: &core.SocketAddress_PortValue{PortValue: port},
	}}}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

// httpListener listens on port and takes its routes from RDS rdsName.
func httpListener(name string, port uint32, rdsName string) *listener.Listener {
	h := &hcm.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{ConfigSource: ads(), RouteConfigName: rdsName}},
		HttpFilters: []*hcm.HttpFilter{{
			Name: "envoy.filters.http.router", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&router.Router{})},
		}},
	}
	return &listener.Listener{
		Name:    name,
		Address: sockAddr("127.0.0.1", port),
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(h)},
		}}}},
	}
}

// tcpListener proxies to clusterName; an empty clusterName makes the
// listener invalid.
func tcpListener(name string, port uint32, clusterName string) *listener.Listener {
	tp := &tcpproxy.TcpProxy{StatPrefix: name}
	if clusterName != "" {
		tp.ClusterSpecifier = &tcpproxy.TcpProxy_Cluster{Cluster: clusterName}
	}
	return &listener.Listener{
		Name:    name,
		Address: sockAddr("127.0.0.1", port),
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name: "envoy.filters.network.tcp_proxy", ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(tp)},
		}}}},
	}
}

func edsCluster(name string) *cluster.Cluster {
	return &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: ads()},
	}
}

func routeConfig(name, domain string) *route.RouteConfiguration {
	return &route.RouteConfiguration{Name: name, VirtualHosts: []*route.VirtualHost{{Name: name, Domains: []string{domain}}}}
}

func assignment(name string, ports ...uint32) *endpoint.ClusterLoadAssignment {
	var eps []*endpoint.LbEndpoint
	for _, p := range ports {
		eps = append(eps, &endpoint.LbEndpoint{HostIdentifier: &endpoint.LbEndpoint_Endpoint{
			Endpoint: &endpoint.Endpoint{Address: sockAddr("127.0.0.1", p)},
		}})
	}
	return &endpoint.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: eps}}}
}

// resources groups protos by type for controlPlane.set. Every type is
// present, even empty, so that each gets the snapshot's version.
func resources(ms ...proto.Message) map[resourcev3.Type][]types.Resource {
	out := map[resourcev3.Type][]types.Resource{
		resourcev3.ListenerType: {}, resourcev3.ClusterType: {}, resourcev3.RouteType: {}, resourcev3.EndpointType: {},
		resourcev3.SecretType: {},
	}
	for _, m := range ms {
		var t resourcev3.Type
		switch m.(type) {
		case *listener.Listener:
			t = resourcev3.ListenerType
		case *cluster.Cluster:
			t = resourcev3.ClusterType
		case *route.RouteConfiguration:
			t = resourcev3.RouteType
		case *endpoint.ClusterLoadAssignment:
			t = resourcev3.EndpointType
		case *tlsv3.Secret:
			t = resourcev3.SecretType
		default:
			panic("unexpected resource")
		}
		out[t] = append(out[t], m)
	}
	return out
}
