package resource

import (
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"net/netip"
	"reflect"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

func TestDecodeListenerDefaults(t *testing.T) {
	l, err := DecodeListener(tcpListener(t))
	if err != nil {
		t.Fatal(err)
	}
	want := &state.Listener{
		Name:                   "in",
		Address:                netip.MustParseAddrPort("127.0.0.1:15006"),
		BindToPort:             true,
		ListenerFiltersTimeout: 15 * time.Second,
		FilterChains: []*state.FilterChain{{
			TCPProxy: &state.TCPProxy{StatPrefix: "tcp", Cluster: "c", IdleTimeout: time.Hour},
		}},
	}
	if !reflect.DeepEqual(l, want) {
		t.Fatalf("got %+v\nwant %+v", l, want)
	}
}

func TestDecodeListenerFields(t *testing.T) {
	tests := []struct {
		name  string
		edit  func(*listenerv3.Listener)
		check func(*testing.T, *state.Listener)
	}{
		{"ipv6 address", func(l *listenerv3.Listener) { l.Address = sockAddr("::1", 80) }, func(t *testing.T, l *state.Listener) {
			if l.Address != netip.MustParseAddrPort("[::1]:80") {
				t.Errorf("address %v", l.Address)
			}
		}},
		{"bind_to_port false, use_original_dst", func(l *listenerv3.Listener) {
			l.BindToPort = wrapperspb.Bool(false)
			l.UseOriginalDst = wrapperspb.Bool(true)
		}, func(t *testing.T, l *state.Listener) {
			if l.BindToPort || !l.UseOriginalDst {
				t.Errorf("BindToPort %v UseOriginalDst %v", l.BindToPort, l.UseOriginalDst)
			}
		}},
		{"listener filters accepted, timeout", func(l *listenerv3.Listener) {
			l.ListenerFilters = []*listenerv3.ListenerFilter{
				{Name: "envoy.filters.listener.tls_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(t, &tlsinspectorv3.TlsInspector{})}},
				{Name: "envoy.filters.listener.original_dst"},
				{Name: "envoy.filters.listener.http_inspector"},
			}
			l.ListenerFiltersTimeout = durationpb.New(2 * time.Second)
		}, func(t *testing.T, l *state.Listener) {
			if l.ListenerFiltersTimeout != 2*time.Second {
				t.Errorf("timeout %v", l.ListenerFiltersTimeout)
			}
		}},
		{"filter chain match", func(l *listenerv3.Listener) {
			l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{
				DestinationPort:      wrapperspb.UInt32(8080),
				PrefixRanges:         []*corev3.CidrRange{{AddressPrefix: "10.1.2.3", PrefixLen: wrapperspb.UInt32(8)}, {AddressPrefix: "::1"}},
				SourceType:           listenerv3.FilterChainMatch_SAME_IP_OR_LOOPBACK,
				SourcePrefixRanges:   []*corev3.CidrRange{{AddressPrefix: "192.168.0.0", PrefixLen: wrapperspb.UInt32(16)}},
				SourcePorts:          []uint32{1234},
				ServerNames:          []string{"*.Example.com", "a.b"},
				TransportProtocol:    "tls",
				ApplicationProtocols: []string{"h2", "http/1.1"},
			}
		}, func(t *testing.T, l *state.Listener) {
			want := state.FilterChainMatch{
				DestinationPort:      8080,
				PrefixRanges:         []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")},
				SourceType:           state.SourceSameIPOrLoopback,
				SourcePrefixRanges:   []netip.Prefix{netip.MustParsePrefix("192.168.0.0/16")},
				SourcePorts:          []uint32{1234},
				ServerNames:          []string{"*.example.com", "a.b"},
				TransportProtocol:    "tls",
				ApplicationProtocols: []string{"h2", "http/1.1"},
			}
			if !reflect.DeepEqual(l.FilterChains[0].Match, want) {
				t.Errorf("got %+v\nwant %+v", l.FilterChains[0].Match, want)
			}
		}},
		{"default filter chain", func(l *listenerv3.Listener) {
			l.DefaultFilterChain = l.FilterChains[0]
			l.FilterChains = nil
		}, func(t *testing.T, l *state.Listener) {
			if l.DefaultFilterChain == nil || l.DefaultFilterChain.TCPProxy == nil || len(l.FilterChains) != 0 {
				t.Errorf("default chain %+v chains %d", l.DefaultFilterChain, len(l.FilterChains))
			}
		}},
		{"tcp proxy weighted, idle 0", func(l *listenerv3.Listener) {
			l.FilterChains[0].Filters[0] = tcpProxyFilter(t, &tcpproxyv3.TcpProxy{
				ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{
					Clusters: []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{{Name: "a", Weight: 1}, {Name: "b", Weight: 3}},
				}},
				IdleTimeout: durationpb.New(0),
			})
		}, func(t *testing.T, l *state.Listener) {
			p := l.FilterChains[0].TCPProxy
			want := []state.WeightedCluster{{Name: "a", Weight: 1}, {Name: "b", Weight: 3}}
			if !reflect.DeepEqual(p.WeightedClusters, want) || p.IdleTimeout != 0 || p.Cluster != "" {
				t.Errorf("got %+v", p)
			}
		}},
		{"downstream tls", func(l *listenerv3.Listener) {
			ctx := &tlsv3.DownstreamTlsContext{
				CommonTlsContext: &tlsv3.CommonTlsContext{
					TlsCertificates: []*tlsv3.TlsCertificate{{
						CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "CERT"}},
						PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("KEY")}},
					}},
					AlpnProtocols: []string{"h2"},
					ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
						TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "CA"}},
					}},
				},
				RequireClientCertificate: wrapperspb.Bool(true),
			}
			l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, ctx)}}
		}, func(t *testing.T, l *state.Listener) {
			want := &state.DownstreamTLS{CertChainPEM: []byte("CERT"), KeyPEM: []byte("KEY"), ALPN: []string{"h2"}, ClientCAPEM: []byte("CA"), RequireClientCert: true}
			if !reflect.DeepEqual(l.FilterChains[0].TLS, want) {
				t.Errorf("got %+v", l.FilterChains[0].TLS)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := tcpListener(t)
			tc.edit(l)
			got, err := DecodeListener(l)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, got)
		})
	}
}

func TestDecodeHCM(t *testing.T) {
	tests := []struct {
		name string
		edit func(*hcmv3.HttpConnectionManager)
		want func(*state.HTTPConnectionManager)
	}{
		{"defaults", func(*hcmv3.HttpConnectionManager) {}, func(*state.HTTPConnectionManager) {}},
		{"all fields", func(h *hcmv3.HttpConnectionManager) {
			h.CodecType = hcmv3.HttpConnectionManager_HTTP2
			h.StreamIdleTimeout = durationpb.New(0)
			h.RequestTimeout = durationpb.New(time.Second)
			h.RequestHeadersTimeout = durationpb.New(2 * time.Second)
			h.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Minute), MaxHeadersCount: wrapperspb.UInt32(50)}
			h.MaxRequestHeadersKb = wrapperspb.UInt32(96)
			h.UseRemoteAddress = wrapperspb.Bool(true)
			h.XffNumTrustedHops = 2
			h.SkipXffAppend = true
			h.GenerateRequestId = wrapperspb.Bool(false)
			h.PreserveExternalRequestId = true
			h.ServerName = "srv"
			h.ServerHeaderTransformation = hcmv3.HttpConnectionManager_PASS_THROUGH
			h.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(7)}
			h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "envoy.filters.http.fault", IsOptional: true}}, h.HttpFilters...)
		}, func(s *state.HTTPConnectionManager) {
			s.Codec = state.CodecHTTP2
			s.StreamIdleTimeout = 0
			s.RequestTimeout = time.Second
			s.RequestHeadersTimeout = 2 * time.Second
			s.IdleTimeout = time.Minute
			s.MaxHeadersCount = 50
			s.MaxRequestHeadersKB = 96
			s.UseRemoteAddress = true
			s.XffNumTrustedHops = 2
			s.SkipXffAppend = true
			s.GenerateRequestID = false
			s.PreserveExternalRequestID = true
			s.ServerName = "srv"
			s.ServerHeaderPassThrough = true
			s.HTTP2MaxConcurrentStreams = 7
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := rdsHCM(t, "rds1")
			tc.edit(h)
			l := tcpListener(t)
			l.FilterChains[0].Filters[0] = hcmFilter(t, h)
			got, err := DecodeListener(l)
			if err != nil {
				t.Fatal(err)
			}
			want := &state.HTTPConnectionManager{
				StatPrefix: "in", RDSName: "rds1",
				StreamIdleTimeout: 5 * time.Minute, IdleTimeout: time.Hour,
				MaxRequestHeadersKB: 60, MaxHeadersCount: 100, GenerateRequestID: true,
				ServerName: "meshlet", HTTP2MaxConcurrentStreams: 1024,
				HTTPFilters: []string{routerFilterName},
			}
			tc.want(want)
			if !reflect.DeepEqual(got.FilterChains[0].HTTP, want) {
				t.Fatalf("got  %+v\nwant %+v", got.FilterChains[0].HTTP, want)
			}
			if r, _ := References(got); !reflect.DeepEqual(r, []string{"rds1"}) {
				t.Errorf("References = %v", r)
			}
		})
	}
}

func TestDecodeListenerErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*listenerv3.Listener)
		want []string
	}{
		{"no address", func(l *listenerv3.Listener) { l.Address = nil }, []string{`listener "in": address: is required`}},
		{"pipe", func(l *listenerv3.Listener) {
			l.Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/x"}}}
		}, []string{`listener "in": address.pipe:`}},
		{"udp", func(l *listenerv3.Listener) { l.Address.GetSocketAddress().Protocol = corev3.SocketAddress_UDP }, []string{"address.socket_address.protocol: UDP is not supported"}},
		{"named port", func(l *listenerv3.Listener) {
			l.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: "http"}
		}, []string{"address.socket_address.named_port"}},
		{"hostname", func(l *listenerv3.Listener) { l.Address.GetSocketAddress().Address = "localhost" }, []string{"address.socket_address.address", "not an IP"}},
		{"tcp no cluster", func(l *listenerv3.Listener) {
			l.FilterChains[0].Filters[0] = tcpProxyFilter(t, &tcpproxyv3.TcpProxy{StatPrefix: "x"})
		}, []string{`listener "in": filter_chains[0].filters[0].typed_config: tcp_proxy: cluster_specifier is required`}},
		{"unknown network filter", func(l *listenerv3.Listener) {
			l.FilterChains[0].Filters[0] = &listenerv3.Filter{Name: "x", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &tlsinspectorv3.TlsInspector{})}}
		}, []string{"filter_chains[0].filters[0].typed_config", `network filter "x"`, "not supported"}},
		{"missing typed_config", func(l *listenerv3.Listener) {
			l.FilterChains[0].Filters[0] = &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy"}
		}, []string{"filters[0].typed_config: is required"}},
		{"two terminal filters", func(l *listenerv3.Listener) {
			l.FilterChains[0].Filters = append(l.FilterChains[0].Filters, l.FilterChains[0].Filters[0])
		}, []string{"filters[1]: follows terminal filter"}},
		{"no filters", func(l *listenerv3.Listener) { l.FilterChains[0].Filters = nil }, []string{"filter_chains[0].filters: exactly one terminal filter"}},
		{"unknown listener filter", func(l *listenerv3.Listener) {
			l.ListenerFilters = []*listenerv3.ListenerFilter{{Name: "envoy.filters.listener.proxy_protocol"}}
		}, []string{"listener_filters[0]", "proxy_protocol"}},
		{"bad server name", func(l *listenerv3.Listener) {
			l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{ServerNames: []string{"a*.b"}}
		}, []string{"filter_chains[0].filter_chain_match.server_names[0]"}},
		{"bad transport protocol", func(l *listenerv3.Listener) {
			l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "quic"}
		}, []string{"filter_chain_match.transport_protocol"}},
		{"bad cidr", func(l *listenerv3.Listener) {
			l.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{PrefixRanges: []*corev3.CidrRange{{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(33)}}}
		}, []string{"filter_chain_match.prefix_ranges[0].prefix_len"}},
		{"duplicate match", func(l *listenerv3.Listener) {
			l.FilterChains = append(l.FilterChains, l.FilterChains[0])
		}, []string{"filter_chains[1].filter_chain_match: is identical to filter_chains[0]"}},
		{"no chains", func(l *listenerv3.Listener) { l.FilterChains = nil }, []string{"filter_chains: at least one"}},
		{"negative idle timeout", func(l *listenerv3.Listener) {
			l.FilterChains[0].Filters[0] = tcpProxyFilter(t, &tcpproxyv3.TcpProxy{ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "c"}, IdleTimeout: durationpb.New(-time.Second)})
		}, []string{"tcp_proxy: idle_timeout: duration must not be negative"}},
		{"tls without certificate", func(l *listenerv3.Listener) {
			l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{}})}}
		}, []string{"filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates: a certificate is required"}},
		{"tls two sds certificates", func(l *listenerv3.Listener) {
			l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}, {Name: "other"}},
			}})}}
		}, []string{"tls_certificate_sds_secret_configs: only one secret is supported, got 2"}},
		{"tls cert file missing", func(l *listenerv3.Listener) {
			l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificates: []*tlsv3.TlsCertificate{{
					CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/nonexistent/cert.pem"}},
				}},
			}})}}
		}, []string{"tls_certificates[0].certificate_chain.filename", "/nonexistent/cert.pem"}},
		{"san matching without a trusted CA", func(l *listenerv3.Listener) {
			l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificates: []*tlsv3.TlsCertificate{{
					CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "C"}},
					PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "K"}},
				}},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{SanType: tlsv3.SubjectAltNameMatcher_URI, Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "spiffe://td/ns/a/sa/b"}}}},
				}},
			}})}}
		}, []string{"subject alt name matchers need trusted_ca"}},
		{"san type unspecified", func(l *listenerv3.Listener) {
			l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
				TlsCertificates: []*tlsv3.TlsCertificate{{
					CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "C"}},
					PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "K"}},
				}},
				ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
					MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{}},
				}},
			}})}}
		}, []string{"match_typed_subject_alt_names: [0].san_type SAN_TYPE_UNSPECIFIED is not supported"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := tcpListener(t)
			tc.edit(l)
			_, err := DecodeListener(l)
			wantErr(t, err, tc.want...)
		})
	}
}

func TestDecodeHCMErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*hcmv3.HttpConnectionManager)
		want []string
	}{
		{"no route specifier", func(h *hcmv3.HttpConnectionManager) { h.RouteSpecifier = nil }, []string{"http_connection_manager: route_specifier"}},
		{"empty rds name", func(h *hcmv3.HttpConnectionManager) {
			h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{}}
		}, []string{"http_connection_manager: rds.route_config_name: is required"}},
		{"http3", func(h *hcmv3.HttpConnectionManager) { h.CodecType = hcmv3.HttpConnectionManager_HTTP3 }, []string{"codec_type: HTTP3"}},
		{"no router", func(h *hcmv3.HttpConnectionManager) { h.HttpFilters = nil }, []string{"http_filters: envoy.filters.http.router is required"}},
		{"router not last", func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = append(h.HttpFilters, &hcmv3.HttpFilter{Name: "x", IsOptional: true})
		}, []string{"http_filters[0]: envoy.filters.http.router must be the last"}},
		{"required unknown filter", func(h *hcmv3.HttpConnectionManager) {
			h.HttpFilters = append([]*hcmv3.HttpFilter{{Name: "envoy.filters.http.ext_authz"}}, h.HttpFilters...)
		}, []string{`http_filters[0]: HTTP filter "envoy.filters.http.ext_authz"`}},
		{"append_if_absent", func(h *hcmv3.HttpConnectionManager) {
			h.ServerHeaderTransformation = hcmv3.HttpConnectionManager_APPEND_IF_ABSENT
		}, []string{"server_header_transformation"}},
		{"max headers kb", func(h *hcmv3.HttpConnectionManager) { h.MaxRequestHeadersKb = wrapperspb.UInt32(9000) }, []string{"max_request_headers_kb: 9000"}},
		{"inline route error", func(h *hcmv3.HttpConnectionManager) {
			rc := simpleRouteConfig()
			rc.VirtualHosts[0].Domains = []string{"a*b"}
			h.RouteSpecifier = &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: rc}
		}, []string{`listener "in": filter_chains[0].filters[0].typed_config: http_connection_manager: route_config.virtual_hosts[0].domains[0]`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := rdsHCM(t, "r")
			tc.edit(h)
			l := tcpListener(t)
			l.FilterChains[0].Filters[0] = hcmFilter(t, h)
			_, err := DecodeListener(l)
			wantErr(t, err, tc.want...)
		})
	}
}
