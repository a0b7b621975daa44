//lint:file-ignore SA1019 the deprecated cluster-level upstream_http_protocol_options is tested too.

package resource

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/meshlet/meshlet/state"
)

// TestDecodeAutoSNI: upstream_http_protocol_options (what istiod sets for
// DestinationRule TLS without sni) reaches the cluster, in the typed and
// the deprecated cluster-level forms.
func TestDecodeAutoSNI(t *testing.T) {
	explicitH1 := &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
	}}
	tests := []struct {
		name    string
		edit    func(t *testing.T, c *clusterv3.Cluster)
		want    state.AutoSNI
		wantErr string
	}{
		{"none", func(*testing.T, *clusterv3.Cluster) {}, state.AutoSNI{}, ""},
		{"typed", func(t *testing.T, c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = protocolOptions(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions:     explicitH1,
				UpstreamHttpProtocolOptions: &corev3.UpstreamHttpProtocolOptions{AutoSni: true, AutoSanValidation: true, OverrideAutoSniHeader: "X-SNI"},
			})
		}, state.AutoSNI{SNI: true, SANValidation: true, Header: "x-sni"}, ""},
		{"legacy", func(t *testing.T, c *clusterv3.Cluster) {
			c.UpstreamHttpProtocolOptions = &corev3.UpstreamHttpProtocolOptions{AutoSni: true}
		}, state.AutoSNI{SNI: true}, ""},
		{"bad header", func(t *testing.T, c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = protocolOptions(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions:     explicitH1,
				UpstreamHttpProtocolOptions: &corev3.UpstreamHttpProtocolOptions{AutoSni: true, OverrideAutoSniHeader: ":authority"},
			})
		}, state.AutoSNI{}, "upstream_http_protocol_options.override_auto_sni_header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := edsCluster()
			tc.edit(t, c)
			got, err := DecodeCluster(c)
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.AutoSNI != tc.want {
				t.Errorf("AutoSNI = %+v, want %+v", got.AutoSNI, tc.want)
			}
		})
	}
}
