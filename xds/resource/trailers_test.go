//lint:file-ignore SA1019 the deprecated cluster field is still sent by control planes and must be honoured.

package resource

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// http_protocol_options.enable_trailers (Envoy default false) is read from
// every place a cluster may carry HTTP/1.1 options, and from the HCM.
func TestDecodeEnableTrailers(t *testing.T) {
	h1 := &corev3.Http1ProtocolOptions{EnableTrailers: true}
	typed := func(o *httpv3.HttpProtocolOptions) func(c *clusterv3.Cluster) {
		return func(c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptionsKey: mustAny(t, o)}
		}
	}
	tests := []struct {
		name string
		edit func(c *clusterv3.Cluster)
		want bool
	}{
		{"default off", func(*clusterv3.Cluster) {}, false},
		{"deprecated cluster field", func(c *clusterv3.Cluster) { c.HttpProtocolOptions = h1 }, true},
		{"explicit http1", typed(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: h1}}}}), true},
		{"explicit http1 without trailers", typed(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}}}}}), false},
		{"use downstream", typed(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{
			UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{HttpProtocolOptions: h1}}}), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := edsCluster()
			tc.edit(c)
			got, err := DecodeCluster(c)
			if err != nil {
				t.Fatal(err)
			}
			if got.HTTP1Trailers != tc.want {
				t.Fatalf("HTTP1Trailers = %v, want %v", got.HTTP1Trailers, tc.want)
			}
		})
	}
	for _, on := range []bool{false, true} {
		h := rdsHCM(t, "rds1")
		if on {
			h.HttpProtocolOptions = h1
		}
		l := tcpListener(t)
		l.FilterChains[0].Filters[0] = hcmFilter(t, h)
		got, err := DecodeListener(l)
		if err != nil {
			t.Fatal(err)
		}
		if got.FilterChains[0].HTTP.HTTP1Trailers != on {
			t.Fatalf("hcm enable_trailers %v decoded as %v", on, got.FilterChains[0].HTTP.HTTP1Trailers)
		}
	}
}
