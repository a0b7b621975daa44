package resource

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

func inline(s string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
}

func TestDecodeSecret(t *testing.T) {
	tests := []struct {
		name    string
		in      *tlsv3.Secret
		want    *state.Secret
		wantErr string
	}{
		{
			name: "istio default",
			in: &tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: inline("CHAIN"), PrivateKey: inline("KEY"),
			}}},
			want: &state.Secret{Name: "default", CertChainPEM: []byte("CHAIN"), KeyPEM: []byte("KEY")},
		},
		{
			name: "istio ROOTCA",
			in: &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline("ROOT"),
			}}},
			want: &state.Secret{Name: "ROOTCA", TrustedCAPEM: []byte("ROOT")},
		},
		{
			name: "validation with max_verify_depth",
			in: &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline("ROOT"), MaxVerifyDepth: wrapperspb.UInt32(0),
			}}},
			want: &state.Secret{Name: "ROOTCA", TrustedCAPEM: []byte("ROOT"), MaxVerifyDepth: new(uint32)},
		},
		{name: "no name", in: &tlsv3.Secret{}, wantErr: `secret "": name: is required`},
		{name: "no type", in: &tlsv3.Secret{Name: "x"}, wantErr: `secret "x": one of tls_certificate or validation_context`},
		{
			name: "missing key",
			in: &tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
				CertificateChain: inline("CHAIN"),
			}}},
			wantErr: `secret "default": tls_certificate.private_key: a data source`,
		},
		{
			name:    "validation without ca",
			in:      &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{}}},
			wantErr: `validation_context.trusted_ca: is required`,
		},
		{
			name: "validation with san matching",
			in: &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline("ROOT"), MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{}},
			}}},
			wantErr: `validation_context.match_typed_subject_alt_names: is not supported`,
		},
		{
			name:    "session ticket keys",
			in:      &tlsv3.Secret{Name: "stek", Type: &tlsv3.Secret_SessionTicketKeys{SessionTicketKeys: &tlsv3.TlsSessionTicketKeys{}}},
			wantErr: `secret "stek": secret type`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, got, err := Decode(state.TypeSecret, mustAny(t, tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Decode = %v, want error containing %q", err, tt.wantErr)
				}
				if got != nil {
					t.Errorf("value %v returned with an error", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := got.(*state.Secret)
			if name != tt.want.Name || s.Name != tt.want.Name || string(s.CertChainPEM) != string(tt.want.CertChainPEM) ||
				string(s.KeyPEM) != string(tt.want.KeyPEM) || string(s.TrustedCAPEM) != string(tt.want.TrustedCAPEM) {
				t.Fatalf("Decode = %q %+v, want %+v", name, s, tt.want)
			}
			if g, w := s.MaxVerifyDepth, tt.want.MaxVerifyDepth; (g == nil) != (w == nil) || g != nil && *g != *w {
				t.Fatalf("MaxVerifyDepth = %v, want %v", g, w)
			}
		})
	}
}

// sdsTLS builds a CommonTlsContext that takes its certificate from secret
// cert and its trust bundle from secret ca (combined with a default
// validation context, as istiod writes it), both over source.
func sdsTLS(cert, ca string, source *corev3.ConfigSource) *tlsv3.CommonTlsContext {
	c := &tlsv3.CommonTlsContext{}
	if cert != "" {
		c.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: cert, SdsConfig: source}}
	}
	if ca != "" {
		c.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: ca, SdsConfig: source},
		}}
	}
	return c
}

func TestSDSReferencesInTLSContexts(t *testing.T) {
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	agent := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
		ApiType:      corev3.ApiConfigSource_GRPC,
		GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "sds-grpc"}}}},
	}}}
	downstream := func(c *tlsv3.CommonTlsContext, requireClient bool) *listenerv3.Listener {
		l := tcpListener(t)
		dt := &tlsv3.DownstreamTlsContext{CommonTlsContext: c}
		if requireClient {
			dt.RequireClientCertificate = wrapperspb.Bool(true)
		}
		l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, dt)}}
		return l
	}
	upstream := func(c *tlsv3.CommonTlsContext) *clusterv3.Cluster {
		return &clusterv3.Cluster{
			Name:                 "c",
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
			TransportSocket: &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t,
				&tlsv3.UpstreamTlsContext{CommonTlsContext: c, Sni: "x"})}},
		}
	}
	tests := []struct {
		name    string
		decode  func() (any, error)
		wantRef state.SDSRef
		wantADS []string
		wantErr string
	}{
		{
			name:    "listener over ADS, mTLS",
			decode:  func() (any, error) { return DecodeListener(downstream(sdsTLS("default", "ROOTCA", ads), true)) },
			wantRef: state.SDSRef{Certificate: "default", Validation: "ROOTCA"},
			wantADS: []string{"default", "ROOTCA"},
		},
		{
			name:    "listener, sds_config unset means ADS",
			decode:  func() (any, error) { return DecodeListener(downstream(sdsTLS("default", "", nil), false)) },
			wantRef: state.SDSRef{Certificate: "default"},
			wantADS: []string{"default"},
		},
		{
			name:    "cluster via Istio's sds-grpc agent",
			decode:  func() (any, error) { return DecodeCluster(upstream(sdsTLS("default", "ROOTCA", agent))) },
			wantRef: state.SDSRef{Certificate: "default", Validation: "ROOTCA", Agent: true},
		},
		{
			name: "plain validation_context_sds_secret_config",
			decode: func() (any, error) {
				c := &tlsv3.CommonTlsContext{ValidationContextType: &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{
					ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA"}}}
				return DecodeCluster(upstream(c))
			},
			wantRef: state.SDSRef{Validation: "ROOTCA"},
			wantADS: []string{"ROOTCA"},
		},
		{
			name: "mixed sources",
			decode: func() (any, error) {
				c := sdsTLS("default", "", ads)
				c.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA", SdsConfig: agent}}
				return DecodeCluster(upstream(c))
			},
			wantErr: "both ADS and another config source",
		},
		{
			name:    "sds name missing",
			decode:  func() (any, error) { return DecodeListener(downstream(sdsTLS("", "", nil), false)) },
			wantErr: "a certificate is required",
		},
		{
			name: "empty sds name",
			decode: func() (any, error) {
				c := &tlsv3.CommonTlsContext{TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{}}}
				return DecodeListener(downstream(c, false))
			},
			wantErr: "tls_certificate_sds_secret_configs[0].name: is required",
		},
		{
			name:    "client cert required without any CA",
			decode:  func() (any, error) { return DecodeListener(downstream(sdsTLS("default", "", nil), true)) },
			wantErr: "require_client_certificate",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := tt.decode()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("decode = %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var ref state.SDSRef
			switch x := v.(type) {
			case *state.Listener:
				ref = x.FilterChains[0].TLS.SDS
				v = x
			case *state.Cluster:
				ref = x.TLS.SDS
				v = x
			}
			if ref != tt.wantRef {
				t.Errorf("SDS = %+v, want %+v", ref, tt.wantRef)
			}
			if got := SecretReferences(v); strings.Join(got, ",") != strings.Join(tt.wantADS, ",") {
				t.Errorf("SecretReferences = %v, want %v", got, tt.wantADS)
			}
		})
	}
}
