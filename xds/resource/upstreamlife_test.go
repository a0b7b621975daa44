//lint:file-ignore SA1019 the deprecated cluster-level common_http_protocol_options is tested too.

package resource

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestDecodeUpstreamLifetimes: the cluster's max_connection_duration and
// max_stream_duration reach state in the typed and the deprecated forms;
// negative values NACK with their field path.
func TestDecodeUpstreamLifetimes(t *testing.T) {
	explicitH2 := &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
		ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
	}}
	typed := func(common *corev3.HttpProtocolOptions) func(*testing.T, *clusterv3.Cluster) {
		return func(t *testing.T, c *clusterv3.Cluster) {
			c.TypedExtensionProtocolOptions = protocolOptions(t, &httpv3.HttpProtocolOptions{
				UpstreamProtocolOptions: explicitH2, CommonHttpProtocolOptions: common,
			})
		}
	}
	tests := []struct {
		name          string
		edit          func(*testing.T, *clusterv3.Cluster)
		conn, stream  time.Duration
		wantErrFields []string
	}{
		{name: "unset", edit: func(*testing.T, *clusterv3.Cluster) {}},
		{name: "typed", edit: typed(&corev3.HttpProtocolOptions{
			MaxConnectionDuration: durationpb.New(30 * time.Second),
			MaxStreamDuration:     durationpb.New(2 * time.Second),
		}), conn: 30 * time.Second, stream: 2 * time.Second},
		{name: "legacy cluster field", edit: func(_ *testing.T, c *clusterv3.Cluster) {
			c.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxConnectionDuration: durationpb.New(time.Minute)}
		}, conn: time.Minute},
		{name: "negative connection duration", edit: typed(&corev3.HttpProtocolOptions{
			MaxConnectionDuration: durationpb.New(-time.Second),
		}), wantErrFields: []string{"common_http_protocol_options.max_connection_duration", "negative"}},
		{name: "negative stream duration", edit: typed(&corev3.HttpProtocolOptions{
			MaxStreamDuration: durationpb.New(-time.Second),
		}), wantErrFields: []string{"common_http_protocol_options.max_stream_duration", "negative"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := edsCluster()
			tc.edit(t, c)
			got, err := DecodeCluster(c)
			if tc.wantErrFields != nil {
				wantErr(t, err, tc.wantErrFields...)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.UpstreamMaxConnectionDuration != tc.conn || got.UpstreamMaxStreamDuration != tc.stream {
				t.Errorf("durations = %v, %v; want %v, %v", got.UpstreamMaxConnectionDuration, got.UpstreamMaxStreamDuration, tc.conn, tc.stream)
			}
		})
	}
}

// TestDecodeTCPProxyMaxConnectionDuration: max_downstream_connection_duration
// reaches state; values below the proto's 1ms minimum NACK.
func TestDecodeTCPProxyMaxConnectionDuration(t *testing.T) {
	tests := []struct {
		name    string
		d       *durationpb.Duration
		want    time.Duration
		wantErr string
	}{
		{"unset", nil, 0, ""},
		{"set", durationpb.New(90 * time.Second), 90 * time.Second, ""},
		{"negative", durationpb.New(-time.Second), 0, "tcp_proxy: max_downstream_connection_duration: duration must not be negative"},
		{"zero", durationpb.New(0), 0, "max_downstream_connection_duration: must be at least 1ms"},
		{"below 1ms", durationpb.New(time.Microsecond), 0, "max_downstream_connection_duration: must be at least 1ms"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := tcpListener(t)
			l.FilterChains[0].Filters[0] = tcpProxyFilter(t, &tcpproxyv3.TcpProxy{
				StatPrefix: "tcp", ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "c"},
				MaxDownstreamConnectionDuration: tc.d,
			})
			got, err := DecodeListener(l)
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := got.FilterChains[0].TCPProxy.MaxDownstreamConnectionDuration; d != tc.want {
				t.Errorf("MaxDownstreamConnectionDuration = %v, want %v", d, tc.want)
			}
		})
	}
}
