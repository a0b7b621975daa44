package resource

import (
	"crypto/tls"
	"reflect"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestDecodeTLSParamsCurves(t *testing.T) {
	tests := []struct {
		name    string
		curves  []string
		want    []tls.CurveID
		wantErr string
	}{
		{"none", nil, nil, ""},
		{"mesh defaults", []string{"X25519", "P-256"}, []tls.CurveID{tls.X25519, tls.CurveP256}, ""},
		{"all", []string{"X25519MLKEM768", "P-384", "P-521", "secp256r1"}, []tls.CurveID{tls.X25519MLKEM768, tls.CurveP384, tls.CurveP521, tls.CurveP256}, ""},
		{"unknown", []string{"P-256", "brainpoolP256r1"}, nil, `ecdh_curves: [1] "brainpoolP256r1" is not a curve Go supports`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := decodeTLSParams(&tlsv3.TlsParameters{EcdhCurves: tc.curves})
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Curves, tc.want) {
				t.Errorf("curves %v, want %v", got.Curves, tc.want)
			}
		})
	}
}

// TestDecodeMaxVerifyDepth: max_verify_depth reaches both directions'
// parameters; unset stays nil (no limit), 0 is kept as a limit.
func TestDecodeMaxVerifyDepth(t *testing.T) {
	vc := func(depth *wrapperspb.UInt32Value) *tlsv3.CommonTlsContext_ValidationContext {
		return &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa:      &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "CA"}},
			MaxVerifyDepth: depth,
		}}
	}
	for _, depth := range []*wrapperspb.UInt32Value{nil, wrapperspb.UInt32(0), wrapperspb.UInt32(3)} {
		c := edsCluster()
		c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.UpstreamTlsContext{
			CommonTlsContext: &tlsv3.CommonTlsContext{ValidationContextType: vc(depth)},
		})}}
		up, err := DecodeCluster(c)
		if err != nil {
			t.Fatal(err)
		}
		l := tcpListener(t)
		l.FilterChains[0].TransportSocket = &corev3.TransportSocket{Name: "tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{
				CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "C"}},
				PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "K"}},
			}},
			ValidationContextType: vc(depth),
		}})}}
		down, err := DecodeListener(l)
		if err != nil {
			t.Fatal(err)
		}
		for side, got := range map[string]*uint32{"upstream": up.TLS.Params.MaxVerifyDepth, "downstream": down.FilterChains[0].TLS.Params.MaxVerifyDepth} {
			switch {
			case depth == nil && got != nil:
				t.Errorf("%s: unset depth decoded as %d", side, *got)
			case depth != nil && (got == nil || *got != depth.GetValue()):
				t.Errorf("%s: depth %v decoded as %v", side, depth.GetValue(), got)
			}
		}
	}
}
