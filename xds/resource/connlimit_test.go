package resource

import (
	"reflect"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	connlimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

func TestDecodeConnectionLimit(t *testing.T) {
	tests := []struct {
		name    string
		cl      *connlimitv3.ConnectionLimit
		want    []*state.ConnectionLimit
		wantErr string
	}{
		{"limit and delay", &connlimitv3.ConnectionLimit{StatPrefix: "cl", MaxConnections: wrapperspb.UInt64(5), Delay: durationpb.New(time.Second)},
			[]*state.ConnectionLimit{{StatPrefix: "cl", MaxConnections: 5, Delay: time.Second}}, ""},
		{"runtime disabled", &connlimitv3.ConnectionLimit{StatPrefix: "cl", MaxConnections: wrapperspb.UInt64(5),
			RuntimeEnabled: &corev3.RuntimeFeatureFlag{DefaultValue: wrapperspb.Bool(false), RuntimeKey: "k"}}, nil, ""},
		{"no stat_prefix", &connlimitv3.ConnectionLimit{MaxConnections: wrapperspb.UInt64(5)}, nil,
			"filters[0].typed_config: connection_limit: stat_prefix: is required"},
		{"no max", &connlimitv3.ConnectionLimit{StatPrefix: "cl"}, nil, "connection_limit: max_connections"},
		{"zero max", &connlimitv3.ConnectionLimit{StatPrefix: "cl", MaxConnections: wrapperspb.UInt64(0)}, nil, "connection_limit: max_connections"},
		{"bad delay", &connlimitv3.ConnectionLimit{StatPrefix: "cl", MaxConnections: wrapperspb.UInt64(1), Delay: &durationpb.Duration{Seconds: -1}}, nil, "connection_limit: delay"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := tcpListener(t)
			fc := l.FilterChains[0]
			fc.Filters = append([]*listenerv3.Filter{{Name: "envoy.filters.network.connection_limit",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, tt.cl)}}}, fc.Filters...)
			got, err := DecodeListener(l)
			if tt.wantErr != "" {
				wantErr(t, err, tt.wantErr)
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c := got.FilterChains[0]; !reflect.DeepEqual(c.ConnectionLimits, tt.want) || c.TCPProxy == nil {
				t.Fatalf("chain = %+v", c)
			}
		})
	}
}

func TestDecodeHCMCommonLimits(t *testing.T) {
	h := rdsHCM(t, "r")
	h.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{
		MaxRequestsPerConnection: wrapperspb.UInt32(7),
		MaxStreamDuration:        durationpb.New(3 * time.Second),
	}
	got, err := decodeHCM(mustAny(t, h))
	if err != nil {
		t.Fatal(err)
	}
	if got.MaxRequestsPerConnection != 7 || got.MaxStreamDuration != 3*time.Second {
		t.Fatalf("got max requests %d, max stream duration %v", got.MaxRequestsPerConnection, got.MaxStreamDuration)
	}
	h.CommonHttpProtocolOptions.MaxStreamDuration = &durationpb.Duration{Seconds: -1}
	_, err = decodeHCM(mustAny(t, h))
	wantErr(t, err, "common_http_protocol_options.max_stream_duration")
}
