package integration

import (
	"fmt"
	"net"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	origdstv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/original_dst/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	internalv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/internal_upstream/v3"
	rawv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// istioHBONE builds the resources istiod sends a sidecar that originates
// HBONE to an ambient destination: the service cluster's endpoint is an
// internal address naming the connect_originate internal listener, whose
// tcp_proxy tunnels (CONNECT to %DOWNSTREAM_LOCAL_ADDRESS%) through the
// ORIGINAL_DST connect_originate cluster: mTLS from SDS default/ROOTCA,
// HTTP/2 with allow_connect, upstream_port_override = the HBONE port.
func istioHBONE(t *testing.T, listen, dest string, hbonePort uint32, sanPrefix string) []types.Resource {
	t.Helper()
	const svc = "outbound|9000||echo.default.svc.cluster.local"
	sds := func(name string) *tlsv3.SdsSecretConfig {
		return &tlsv3.SdsSecretConfig{Name: name, SdsConfig: &corev3.ConfigSource{
			ResourceApiVersion: corev3.ApiVersion_V3,
			ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
				ApiType: corev3.ApiConfigSource_GRPC, TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "sds-grpc"}}}},
			}},
		}}
	}
	lh, lp := splitHostPort(t, listen)
	out := tcpListener(t, "outbound_9000", fmt.Sprintf("%s:%d", lh, lp), svc)

	service := &clusterv3.Cluster{
		Name:                 svc,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ResourceApiVersion: corev3.ApiVersion_V3, ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}},
		ConnectTimeout: durationpb.New(2 * time.Second),
		TransportSocket: &corev3.TransportSocket{Name: "internal_upstream", ConfigType: &corev3.TransportSocket_TypedConfig{
			TypedConfig: anyOf(t, &internalv3.InternalUpstreamTransport{
				PassthroughMetadata: []*internalv3.InternalUpstreamTransport_MetadataValueSource{{
					Kind: &metadatav3.MetadataKind{Kind: &metadatav3.MetadataKind_Host_{Host: &metadatav3.MetadataKind_Host{}}},
					Name: "envoy.filters.listener.original_dst",
				}},
				TransportSocket: &corev3.TransportSocket{Name: "raw_buffer", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, &rawv3.RawBuffer{})}},
			}),
		}},
	}
	dh, dp := splitHostPort(t, dest)
	local, err := structpb.NewStruct(map[string]any{"local": fmt.Sprintf("%s:%d", dh, dp)})
	if err != nil {
		t.Fatal(err)
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: svc, Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
					AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: "connect_originate"},
					EndpointId:           fmt.Sprintf("%s:%d", dh, dp),
				}},
			}}},
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"envoy.filters.listener.original_dst": local}},
		}},
	}}}

	originate := &listenerv3.Listener{
		Name:              "connect_originate",
		UseOriginalDst:    wrapperspb.Bool(false),
		ListenerSpecifier: &listenerv3.Listener_InternalListener{InternalListener: &listenerv3.Listener_InternalListenerConfig{}},
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name:       "envoy.filters.listener.original_dst",
			ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: anyOf(t, &origdstv3.OriginalDst{})},
		}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.tcp_proxy",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, &tcpproxyv3.TcpProxy{
				StatPrefix:       "connect_originate",
				ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "connect_originate"},
				TunnelingConfig:  &tcpproxyv3.TcpProxy_TunnelingConfig{Hostname: "%DOWNSTREAM_LOCAL_ADDRESS%"},
			})},
		}}}},
	}

	var sans []*tlsv3.SubjectAltNameMatcher
	if sanPrefix != "" {
		sans = []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI,
			Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: sanPrefix}}}}
	}
	tunnel := &clusterv3.Cluster{
		Name:                 "connect_originate",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
		ConnectTimeout:       durationpb.New(2 * time.Second),
		CleanupInterval:      durationpb.New(60 * time.Second),
		LbConfig: &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{
			UpstreamPortOverride: wrapperspb.UInt32(hbonePort),
			MetadataKey: &metadatav3.MetadataKey{Key: "envoy.filters.listener.original_dst",
				Path: []*metadatav3.MetadataKey_PathSegment{{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: "waypoint"}}}},
		}},
		TypedExtensionProtocolOptions: map[string]*anypb.Any{
			"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": anyOf(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{
						AllowConnect:                true,
						InitialStreamWindowSize:     wrapperspb.UInt32(4 << 20),
						InitialConnectionWindowSize: wrapperspb.UInt32(16 << 20),
					}},
				}},
			}),
		},
		TransportSocket: &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{
			TypedConfig: anyOf(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_3, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
				AlpnProtocols:                  []string{"h2"},
				TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds("default")},
				ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: sans},
					ValidationContextSdsSecretConfig: sds("ROOTCA"),
				}},
			}}),
		}},
	}
	return []types.Resource{out, service, cla, originate, tunnel}
}

// TestHBONEIstioShape: a go-control-plane server gives proxy A the
// configuration istiod generates for HBONE origination; A tunnels a TCP
// connection to proxy B's HBONE inbound, which delivers it to the echo
// backend. A tunnel cluster whose SAN matcher rejects B's identity ends
// the connection instead.
func TestHBONEIstioShape(t *testing.T) {
	echo := startTCPEcho(t)
	ca := newHBCA(t)
	hbonePort := freePort(t)
	runHBONEProxy(t, "", append(ca.issue(t, "server", "spiffe://cluster.local/ns/default/sa/server"),
		"--hbone-inbound", fmt.Sprintf("127.0.0.1:%d", hbonePort))...)

	tests := []struct {
		name      string
		sanPrefix string
		ok        bool
	}{
		{"san matches the server", "spiffe://cluster.local/ns/default/sa/", true},
		{"san rejects the server", "spiffe://cluster.local/ns/other/sa/", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cp := startControlPlane(t)
			listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			version := cp.set(istioHBONE(t, listen, echo, uint32(hbonePort), tt.sanPrefix)...)
			startProxy(t, cp, proxyOpts{args: ca.issue(t, fmt.Sprintf("istio-client%d", i), "spiffe://cluster.local/ns/default/sa/client")})
			var got string
			var err error
			if tt.ok {
				// The listener is bound once the whole chain arrived.
				eventually(t, 10*time.Second, func() error {
					got, err = echoOnce(listen, "istio shaped")
					if err != nil || got != "istio shaped" {
						return fmt.Errorf("echo = %q, %v", got, err)
					}
					return nil
				})
				if nacks := cp.nackMessages(); len(nacks) > 0 {
					t.Fatalf("NACKs: %v", nacks)
				}
				return
			}
			// Refusal must come from the SAN check, not from a chain that
			// has not arrived yet: wait until every type is ACKed.
			eventually(t, 10*time.Second, func() error {
				if nacks := cp.nackMessages(); len(nacks) > 0 {
					return fmt.Errorf("NACKs: %v", nacks)
				}
				for _, typ := range []string{resource.ListenerType, resource.ClusterType, resource.EndpointType} {
					if v := cp.acked(typ); v != version {
						return fmt.Errorf("%s acked %q, want %q", typ, v, version)
					}
				}
				if _, err := dialOK(listen); err != nil {
					return err
				}
				return nil
			})
			got, err = echoOnce(listen, "istio shaped")
			if err == nil || got != "" {
				t.Fatalf("echo = %q, %v; want the connection closed with no data", got, err)
			}
		})
	}
}

// acked is the last version the proxy ACKed for typ.
func (cp *controlPlane) acked(typ string) string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return cp.acks[typ]
}

// dialOK reports whether addr accepts connections (the listener is up).
func dialOK(addr string) (bool, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false, err
	}
	c.Close()
	return true, nil
}
