//lint:file-ignore SA1019 tests cover the deprecated fields control planes still send.

package resource

import (
	"google.golang.org/protobuf/types/known/structpb"
	"reflect"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	lbcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	ringhashv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

func edsCluster() *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 "c",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{},
	}
}

func lbEndpoint(host string, port uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: sockAddr(host, port)}}}
}

func staticCluster(typ clusterv3.Cluster_DiscoveryType, hosts ...string) *clusterv3.Cluster {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{{}}}
	for _, h := range hosts {
		cla.Endpoints[0].LbEndpoints = append(cla.Endpoints[0].LbEndpoints, lbEndpoint(h, 80))
	}
	return &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ}, LoadAssignment: cla}
}

func typedPolicy(t testing.TB, a *anypb.Any) *clusterv3.LoadBalancingPolicy_Policy {
	return &clusterv3.LoadBalancingPolicy_Policy{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "p", TypedConfig: a}}
}

func protocolOptions(t testing.TB, o *httpv3.HttpProtocolOptions) map[string]*anypb.Any {
	return map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(t, o)}
}

func TestDecodeClusterDefaults(t *testing.T) {
	c, err := DecodeCluster(edsCluster())
	if err != nil {
		t.Fatal(err)
	}
	want := &state.Cluster{
		Name: "c", Type: state.ClusterEDS, EDSServiceName: "c", ConnectTimeout: 5 * time.Second,
		LBPolicy: state.LBRoundRobin, ChoiceCount: 2, ActiveRequestBias: 1,
		MinRingSize: 1024, MaxRingSize: 8 << 20, MaglevTableSize: 65537,
		Protocol: state.UpstreamHTTP1, HTTP2MaxConcurrentStreams: 2147483647, UpstreamIdleTimeout: time.Hour,
		DNSRefreshRate: 5 * time.Second, DNSLookupFamily: "auto",
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got  %+v\nwant %+v", c, want)
	}
	if _, eds := References(c); !reflect.DeepEqual(eds, []string{"c"}) {
		t.Errorf("References = %v", eds)
	}
}

func TestDecodeClusterFields(t *testing.T) {
	tests := []struct {
		name  string
		in    func(t *testing.T) *clusterv3.Cluster
		check func(*testing.T, *state.Cluster)
	}{
		{"eds service name", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.EdsClusterConfig.ServiceName = "svc"
			c.ConnectTimeout = durationpb.New(time.Second)
			return c
		}, func(t *testing.T, c *state.Cluster) {
			if c.EDSServiceName != "svc" || c.ConnectTimeout != time.Second {
				t.Errorf("%+v", c)
			}
			if _, eds := References(c); !reflect.DeepEqual(eds, []string{"svc"}) {
				t.Errorf("References = %v", eds)
			}
		}},
		{"least request", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{
				ChoiceCount: wrapperspb.UInt32(3), ActiveRequestBias: &corev3.RuntimeDouble{DefaultValue: 0.5},
			}}
			return c
		}, func(t *testing.T, c *state.Cluster) {
			if c.LBPolicy != state.LBLeastRequest || c.ChoiceCount != 3 || c.ActiveRequestBias != 0.5 {
				t.Errorf("%+v", c)
			}
		}},
		{"ring hash", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{
				MinimumRingSize: wrapperspb.UInt64(64), MaximumRingSize: wrapperspb.UInt64(128),
			}}
			return c
		}, func(t *testing.T, c *state.Cluster) {
			if c.LBPolicy != state.LBRingHash || c.MinRingSize != 64 || c.MaxRingSize != 128 {
				t.Errorf("%+v", c)
			}
		}},
		{"maglev, random", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(251)}}
			return c
		}, func(t *testing.T, c *state.Cluster) {
			if c.LBPolicy != state.LBMaglev || c.MaglevTableSize != 251 {
				t.Errorf("%+v", c)
			}
		}},
		{"typed policy: first supported wins", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.LbPolicy = clusterv3.Cluster_RANDOM // ignored: load_balancing_policy takes precedence
			c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
				typedPolicy(t, mustAny(t, &wrrlocalityv3.WrrLocality{})),
				typedPolicy(t, mustAny(t, &leastrequestv3.LeastRequest{ChoiceCount: wrapperspb.UInt32(4)})),
				typedPolicy(t, mustAny(t, &maglevv3.Maglev{})),
			}}
			return c
		}, func(t *testing.T, c *state.Cluster) {
			if c.LBPolicy != state.LBLeastRequest || c.ChoiceCount != 4 {
				t.Errorf("%+v", c)
			}
		}},
		{"wrr_locality wrapping round robin (gRFC A52)", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
				typedPolicy(t, mustAny(t, &wrrlocalityv3.WrrLocality{EndpointPickingPolicy: &clusterv3.LoadBalancingPolicy{
					Policies: []*clusterv3.LoadBalancingPolicy_Policy{typedPolicy(t, mustAny(t, &leastrequestv3.LeastRequest{ChoiceCount: wrapperspb.UInt32(3)}))},
				}})),
			}}
			return c
		}, func(t *testing.T, c *state.Cluster) {
			if c.LBPolicy != state.LBLeastRequest || c.ChoiceCount != 3 || !c.LocalityWeighted {
				t.Errorf("%+v", c)
			}
		}},
		{"typed ring hash with locality weighting", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
				typedPolicy(t, mustAny(t, &ringhashv3.RingHash{MaximumRingSize: wrapperspb.UInt64(4096), LocalityWeightedLbConfig: &lbcommonv3.LocalityLbConfig_LocalityWeightedLbConfig{}})),
			}}
			return c
		}, func(t *testing.T, c *state.Cluster) {
			if c.LBPolicy != state.LBRingHash || c.MaxRingSize != 4096 || !c.LocalityWeighted {
				t.Errorf("%+v", c)
			}
		}},
		{"common lb locality weighted", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
				LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}}}
			return c
		}, func(t *testing.T, c *state.Cluster) {
			if !c.LocalityWeighted {
				t.Errorf("%+v", c)
			}
		}},
		{"explicit http2 + common options", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.TypedExtensionProtocolOptions = protocolOptions(t, &httpv3.HttpProtocolOptions{
				CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Minute), MaxRequestsPerConnection: wrapperspb.UInt32(10)},
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
					ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(100)}},
				}},
			})
			return c
		}, func(t *testing.T, c *state.Cluster) {
			if c.Protocol != state.UpstreamHTTP2 || c.HTTP2MaxConcurrentStreams != 100 || c.UpstreamIdleTimeout != time.Minute || c.MaxRequestsPerConnection != 10 {
				t.Errorf("%+v", c)
			}
		}},
		{"use downstream", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.TypedExtensionProtocolOptions = protocolOptions(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{}},
			})
			return c
		}, func(t *testing.T, c *state.Cluster) {
			if c.Protocol != state.UpstreamUseDownstream {
				t.Errorf("%+v", c)
			}
		}},
		{"deprecated http2_protocol_options", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{}
			return c
		}, func(t *testing.T, c *state.Cluster) {
			if c.Protocol != state.UpstreamHTTP2 || c.HTTP2MaxConcurrentStreams != 2147483647 {
				t.Errorf("%+v", c)
			}
		}},
		{"static with ipv6 endpoint", func(t *testing.T) *clusterv3.Cluster {
			return staticCluster(clusterv3.Cluster_STATIC, "127.0.0.1", "::1")
		}, func(t *testing.T, c *state.Cluster) {
			eps := c.LoadAssignment.Localities[0].Endpoints
			if eps[0].Address != "127.0.0.1:80" || eps[1].Address != "[::1]:80" || eps[1].Port != 80 || eps[0].Weight != 1 {
				t.Errorf("%+v", eps)
			}
			if r, e := References(c); r != nil || e != nil {
				t.Errorf("References = %v %v", r, e)
			}
		}},
		{"static without endpoints", func(t *testing.T) *clusterv3.Cluster {
			return &clusterv3.Cluster{Name: "c"}
		}, func(t *testing.T, c *state.Cluster) {
			if c.Type != state.ClusterStatic || c.LoadAssignment == nil || len(c.LoadAssignment.Localities) != 0 {
				t.Errorf("%+v", c)
			}
		}},
		{"strict dns", func(t *testing.T) *clusterv3.Cluster {
			c := staticCluster(clusterv3.Cluster_STRICT_DNS, "backend.local", "10.0.0.1")
			c.DnsRefreshRate = durationpb.New(time.Second)
			c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
			return c
		}, func(t *testing.T, c *state.Cluster) {
			eps := c.LoadAssignment.Localities[0].Endpoints
			if c.Type != state.ClusterStrictDNS || eps[0].Hostname != "backend.local" || eps[0].Address != "" || eps[0].Port != 80 ||
				eps[1].Address != "10.0.0.1:80" || c.DNSRefreshRate != time.Second || c.DNSLookupFamily != "v4" {
				t.Errorf("%+v %+v", c, eps)
			}
		}},
		{"original dst", func(t *testing.T) *clusterv3.Cluster {
			return &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}, LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED}
		}, func(t *testing.T, c *state.Cluster) {
			if c.Type != state.ClusterOriginalDst || c.LoadAssignment != nil {
				t.Errorf("%+v", c)
			}
		}},
		{"upstream tls", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.UpstreamTlsContext{
				Sni: "b.example",
				CommonTlsContext: &tlsv3.CommonTlsContext{
					AlpnProtocols: []string{"h2"},
					ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
						TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "CA"}},
					}},
				},
			})}}
			return c
		}, func(t *testing.T, c *state.Cluster) {
			want := &state.UpstreamTLS{SNI: "b.example", ALPN: []string{"h2"}, RootCAPEM: []byte("CA")}
			if !reflect.DeepEqual(c.TLS, want) {
				t.Errorf("%+v", c.TLS)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := DecodeCluster(tc.in(t))
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestDecodeClusterErrors(t *testing.T) {
	tests := []struct {
		name string
		in   func(t *testing.T) *clusterv3.Cluster
		want []string
	}{
		{"lb policy config without policy", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.LbPolicy = clusterv3.Cluster_LOAD_BALANCING_POLICY_CONFIG
			return c
		}, []string{`cluster "c": lb_policy: LOAD_BALANCING_POLICY_CONFIG is not supported`}},
		{"murmur", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{HashFunction: clusterv3.Cluster_RingHashLbConfig_MURMUR_HASH_2}}
			return c
		}, []string{`cluster "c": ring_hash_lb_config.hash_function: MURMUR_HASH_2`}},
		{"ring min > max", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.LbPolicy = clusterv3.Cluster_RING_HASH
			c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{MinimumRingSize: wrapperspb.UInt64(10), MaximumRingSize: wrapperspb.UInt64(5)}}
			return c
		}, []string{"ring_hash_lb_config.minimum_ring_size: 10 is greater"}},
		{"maglev not prime", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.LbPolicy = clusterv3.Cluster_MAGLEV
			c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{TableSize: wrapperspb.UInt64(100)}}
			return c
		}, []string{"maglev_lb_config.table_size: 100 is not prime"}},
		{"choice count 1", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(1)}}
			return c
		}, []string{"least_request_lb_config.choice_count"}},
		{"no supported typed policy", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{typedPolicy(t, mustAny(t, &wrrlocalityv3.WrrLocality{}))}}
			return c
		}, []string{"load_balancing_policy.policies: none of the policies is supported", "WrrLocality"}},
		{"typed murmur", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{typedPolicy(t, mustAny(t, &ringhashv3.RingHash{HashFunction: ringhashv3.RingHash_MURMUR_HASH_2}))}}
			return c
		}, []string{"load_balancing_policy.policies[0].typed_extension_config.typed_config.hash_function"}},
		{"custom cluster type", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.ClusterDiscoveryType = &clusterv3.Cluster_ClusterType{ClusterType: &clusterv3.Cluster_CustomClusterType{Name: "envoy.clusters.aggregate"}}
			return c
		}, []string{`cluster "c": cluster_type`, "aggregate"}},
		{"static hostname", func(t *testing.T) *clusterv3.Cluster {
			return staticCluster(clusterv3.Cluster_STATIC, "backend.local")
		}, []string{"load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address", "not an IP"}},
		{"dns without endpoints", func(t *testing.T) *clusterv3.Cluster {
			return staticCluster(clusterv3.Cluster_STRICT_DNS)
		}, []string{"load_assignment.endpoints: STRICT_DNS clusters need at least one endpoint"}},
		{"logical dns two endpoints", func(t *testing.T) *clusterv3.Cluster {
			return staticCluster(clusterv3.Cluster_LOGICAL_DNS, "a", "b")
		}, []string{"LOGICAL_DNS clusters take exactly one endpoint"}},
		{"auto config", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.TypedExtensionProtocolOptions = protocolOptions(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_AutoConfig{AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{}},
			})
			return c
		}, []string{"typed_extension_protocol_options[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].auto_config"}},
		{"zero connect timeout", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.ConnectTimeout = durationpb.New(0)
			return c
		}, []string{"connect_timeout: must be greater than 0"}},
		{"transport socket matches", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{Name: "tls", Match: &structpb.Struct{Fields: map[string]*structpb.Value{"n": structpb.NewNumberValue(1)}}}}
			return c
		}, []string{"transport_socket_matches[0].match.n: only string values are supported"}},
		{"unknown transport socket", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.TransportSocket = &corev3.TransportSocket{Name: "x", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.DownstreamTlsContext{})}}
			return c
		}, []string{"transport_socket.typed_config: transport socket \"x\""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeCluster(tc.in(t))
			wantErr(t, err, tc.want...)
		})
	}
}
