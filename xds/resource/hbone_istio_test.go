package resource

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	internalv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/internal_upstream/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

func connectOriginate(t *testing.T, mod func(*tcpproxyv3.TcpProxy_TunnelingConfig)) *listenerv3.Listener {
	tc := &tcpproxyv3.TcpProxy_TunnelingConfig{Hostname: "%DOWNSTREAM_LOCAL_ADDRESS%"}
	if mod != nil {
		mod(tc)
	}
	return &listenerv3.Listener{
		Name:              "connect_originate",
		ListenerSpecifier: &listenerv3.Listener_InternalListener{InternalListener: &listenerv3.Listener_InternalListenerConfig{}},
		ListenerFilters:   []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.original_dst"}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{tcpProxyFilter(t, &tcpproxyv3.TcpProxy{
			StatPrefix:       "connect_originate",
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "connect_originate"},
			TunnelingConfig:  tc,
		})}}},
	}
}

func TestDecodeInternalListener(t *testing.T) {
	hdr := func(k, v string) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
	}
	tests := []struct {
		name    string
		l       func() *listenerv3.Listener
		want    *state.InternalListener
		wantErr string
	}{
		{"istio connect_originate", func() *listenerv3.Listener { return connectOriginate(t, nil) },
			&state.InternalListener{Cluster: "connect_originate", Hostname: "%DOWNSTREAM_LOCAL_ADDRESS%"}, ""},
		{"static headers", func() *listenerv3.Listener {
			return connectOriginate(t, func(tc *tcpproxyv3.TcpProxy_TunnelingConfig) {
				tc.HeadersToAdd = []*corev3.HeaderValueOption{hdr("X-Origin", "sidecar")}
			})
		}, &state.InternalListener{Cluster: "connect_originate", Hostname: "%DOWNSTREAM_LOCAL_ADDRESS%",
			Headers: []state.TunnelHeader{{Name: "x-origin", Value: "sidecar"}}}, ""},
		{"use_post", func() *listenerv3.Listener {
			return connectOriginate(t, func(tc *tcpproxyv3.TcpProxy_TunnelingConfig) { tc.UsePost = true })
		}, nil, "tunneling_config.use_post"},
		{"other formatter", func() *listenerv3.Listener {
			return connectOriginate(t, func(tc *tcpproxyv3.TcpProxy_TunnelingConfig) { tc.Hostname = "%UPSTREAM_HOST%" })
		}, nil, "tunneling_config.hostname"},
		{"dynamic header", func() *listenerv3.Listener {
			return connectOriginate(t, func(tc *tcpproxyv3.TcpProxy_TunnelingConfig) {
				tc.HeadersToAdd = []*corev3.HeaderValueOption{hdr("x-id", "%DOWNSTREAM_REMOTE_ADDRESS%")}
			})
		}, nil, "headers_to_add[0].header.value"},
		{"no tunneling_config", func() *listenerv3.Listener {
			l := connectOriginate(t, nil)
			l.FilterChains[0].Filters[0] = tcpProxyFilter(t, &tcpproxyv3.TcpProxy{StatPrefix: "x", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "c"}})
			return l
		}, nil, "tunneling_config: is required"},
		{"tls inspector", func() *listenerv3.Listener {
			l := connectOriginate(t, nil)
			l.ListenerFilters = append(l.ListenerFilters, &listenerv3.ListenerFilter{Name: "envoy.filters.listener.tls_inspector"})
			return l
		}, nil, "listener_filters[1]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeListener(tt.l())
			if tt.wantErr != "" {
				wantErr(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.BindToPort || got.Internal == nil {
				t.Fatalf("BindToPort = %v, Internal = %v; want an unbound internal listener", got.BindToPort, got.Internal)
			}
			if got.Internal.Cluster != tt.want.Cluster || got.Internal.Hostname != tt.want.Hostname ||
				len(got.Internal.Headers) != len(tt.want.Headers) || (len(tt.want.Headers) > 0 && got.Internal.Headers[0] != tt.want.Headers[0]) {
				t.Fatalf("Internal = %+v, want %+v", got.Internal, tt.want)
			}
		})
	}
}

func internalEndpoint(id string, md map[string]any) *endpointv3.LbEndpoint {
	ep := &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
		Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
			AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: "connect_originate"},
			EndpointId:           id,
		}},
	}}}}
	if md != nil {
		s, _ := structpb.NewStruct(md)
		ep.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.listener.original_dst": s}}
	}
	return ep
}

func TestDecodeInternalEndpoint(t *testing.T) {
	tests := []struct {
		name     string
		ep       *endpointv3.LbEndpoint
		addr     string
		waypoint string
		wantErr  string
	}{
		{"endpoint_id", internalEndpoint("10.0.0.5:80", nil), "10.0.0.5:80", "", ""},
		{"local metadata wins", internalEndpoint("ignored", map[string]any{"local": "10.0.0.6:8080"}), "10.0.0.6:8080", "", ""},
		{"waypoint", internalEndpoint("10.0.0.5:80", map[string]any{"waypoint": "10.0.1.1:15008"}), "10.0.0.5:80", "10.0.1.1:15008", ""},
		{"endpoint_id not ip:port", internalEndpoint("echo.default:80", nil), "", "", "envoy_internal_address.endpoint_id"},
		{"bad waypoint", internalEndpoint("10.0.0.5:80", map[string]any{"waypoint": "wp"}), "", "", "original_dst.waypoint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeEndpoints(&endpointv3.ClusterLoadAssignment{ClusterName: "svc",
				Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{tt.ep}}}})
			if tt.wantErr != "" {
				wantErr(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			ep := got.Localities[0].Endpoints[0]
			if ep.Address != tt.addr || ep.Internal == nil || ep.Internal.Listener != "connect_originate" || ep.Internal.Waypoint != tt.waypoint {
				t.Fatalf("endpoint = %+v (internal %+v)", ep, ep.Internal)
			}
		})
	}
}

func TestDecodeClusterIstioHBONE(t *testing.T) {
	internal := &corev3.TransportSocket{Name: "internal_upstream", ConfigType: &corev3.TransportSocket_TypedConfig{
		TypedConfig: mustAny(t, &internalv3.InternalUpstreamTransport{})}}
	waypointKey := &metadatav3.MetadataKey{Key: "envoy.filters.listener.original_dst",
		Path: []*metadatav3.MetadataKey_PathSegment{{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: "waypoint"}}}}
	tests := []struct {
		name    string
		c       func() *clusterv3.Cluster
		check   func(*testing.T, *state.Cluster)
		wantErr string
	}{
		{"service cluster", func() *clusterv3.Cluster {
			return &clusterv3.Cluster{Name: "svc", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}, TransportSocket: internal}
		}, func(t *testing.T, c *state.Cluster) {
			if c.HBONE == nil || !c.HBONE.Internal || c.HBONE.Cluster != "svc" || c.TLS != nil {
				t.Fatalf("HBONE = %+v, TLS = %+v; want internal, plaintext inside", c.HBONE, c.TLS)
			}
		}, ""},
		{"internal via transport socket match", func() *clusterv3.Cluster {
			return &clusterv3.Cluster{Name: "svc", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				TransportSocketMatches: []*clusterv3.Cluster_TransportSocketMatch{{Name: "tunnel", TransportSocket: internal}}}
		}, func(t *testing.T, c *state.Cluster) {
			if c.HBONE == nil || !c.HBONE.Internal {
				t.Fatalf("HBONE = %+v", c.HBONE)
			}
		}, ""},
		{"tunnel cluster", func() *clusterv3.Cluster {
			return &clusterv3.Cluster{Name: "connect_originate", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
				LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED,
				LbConfig: &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{
					UpstreamPortOverride: wrapperspb.UInt32(15008), MetadataKey: waypointKey}},
				TransportSocket: &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{
					TypedConfig: mustAny(t, &tlsv3.UpstreamTlsContext{})}}}
		}, func(t *testing.T, c *state.Cluster) {
			if c.OriginalDstPortOverride != 15008 || !c.OriginalDstWaypointKey || c.TLS == nil || c.HBONE != nil {
				t.Fatalf("override %d waypoint %v TLS %v HBONE %v", c.OriginalDstPortOverride, c.OriginalDstWaypointKey, c.TLS, c.HBONE)
			}
		}, ""},
		{"other metadata_key", func() *clusterv3.Cluster {
			return &clusterv3.Cluster{Name: "o", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
				LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED,
				LbConfig: &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{
					MetadataKey: &metadatav3.MetadataKey{Key: "istio"}}}}
		}, nil, "original_dst_lb_config.metadata_key"},
		{"both forms", func() *clusterv3.Cluster {
			s, _ := structpb.NewStruct(map[string]any{})
			return &clusterv3.Cluster{Name: "svc", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}, TransportSocket: internal,
				Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"meshlet.hbone": s}}}
		}, nil, "cannot be combined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeCluster(tt.c())
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, got)
		})
	}
}
