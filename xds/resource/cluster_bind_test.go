//lint:file-ignore SA1019 tests cover additional_source_addresses, which control planes still send.

package resource

import (
	"math"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

func bindSock(ip string, port uint32) *corev3.SocketAddress {
	return &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}
}

// TestDecodeUpstreamBindConfig: Istio's inbound shape (127.0.0.6, port 0,
// plus ::6 for dual stack) decodes; what cannot be bound is rejected with
// the field path.
func TestDecodeUpstreamBindConfig(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		name    string
		bind    *corev3.BindConfig
		want    *state.UpstreamBind
		wantErr string
	}{
		{"unset", nil, nil, ""},
		{"empty binds nothing", &corev3.BindConfig{}, nil, ""},
		{"istio inbound", &corev3.BindConfig{SourceAddress: bindSock("127.0.0.6", 0)},
			&state.UpstreamBind{Source: ap("127.0.0.6:0")}, ""},
		{"port and freebind", &corev3.BindConfig{SourceAddress: bindSock("10.1.2.3", 4000), Freebind: wrapperspb.Bool(true)},
			&state.UpstreamBind{Source: ap("10.1.2.3:4000"), Freebind: true}, ""},
		{"freebind alone", &corev3.BindConfig{Freebind: wrapperspb.Bool(true)}, &state.UpstreamBind{Freebind: true}, ""},
		{"socket options ignored", &corev3.BindConfig{SourceAddress: bindSock("127.0.0.6", 0),
			SocketOptions: []*corev3.SocketOption{{Level: 1, Name: 2, Value: &corev3.SocketOption_IntValue{IntValue: 1}}}},
			&state.UpstreamBind{Source: ap("127.0.0.6:0")}, ""},
		{"istio dual stack (extra)", &corev3.BindConfig{SourceAddress: bindSock("127.0.0.6", 0),
			ExtraSourceAddresses: []*corev3.ExtraSourceAddress{{Address: bindSock("::6", 0)}}},
			&state.UpstreamBind{Source: ap("127.0.0.6:0"), Alternate: ap("[::6]:0")}, ""},
		{"dual stack (additional)", &corev3.BindConfig{SourceAddress: bindSock("::6", 0),
			AdditionalSourceAddresses: []*corev3.SocketAddress{bindSock("127.0.0.6", 0)}},
			&state.UpstreamBind{Source: ap("[::6]:0"), Alternate: ap("127.0.0.6:0")}, ""},
		{"mapped v4 is v4", &corev3.BindConfig{SourceAddress: bindSock("::ffff:127.0.0.6", 0)},
			&state.UpstreamBind{Source: ap("127.0.0.6:0")}, ""},

		{"hostname", &corev3.BindConfig{SourceAddress: bindSock("localhost", 0)}, nil,
			`cluster "c": upstream_bind_config.source_address.address: "localhost" is not an IP address`},
		{"empty address", &corev3.BindConfig{SourceAddress: bindSock("", 0)}, nil,
			`upstream_bind_config.source_address.address: "" is not an IP address`},
		{"named port", &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{Address: "127.0.0.6",
			PortSpecifier: &corev3.SocketAddress_NamedPort{NamedPort: "http"}}}, nil,
			"upstream_bind_config.source_address.named_port: named ports are not supported"},
		{"port out of range", &corev3.BindConfig{SourceAddress: bindSock("127.0.0.6", 70000)}, nil,
			"upstream_bind_config.source_address.port_value: 70000 is out of range"},
		{"same family additional", &corev3.BindConfig{SourceAddress: bindSock("127.0.0.6", 0),
			AdditionalSourceAddresses: []*corev3.SocketAddress{bindSock("127.0.0.7", 0)}}, nil,
			"upstream_bind_config.additional_source_addresses[0]: 127.0.0.7 has the same IP family as source_address 127.0.0.6"},
		{"same family extra", &corev3.BindConfig{SourceAddress: bindSock("::6", 0),
			ExtraSourceAddresses: []*corev3.ExtraSourceAddress{{Address: bindSock("::7", 0)}}}, nil,
			"upstream_bind_config.extra_source_addresses[0]: ::7 has the same IP family"},
		{"bad extra address", &corev3.BindConfig{SourceAddress: bindSock("127.0.0.6", 0),
			ExtraSourceAddresses: []*corev3.ExtraSourceAddress{{Address: bindSock("pod.local", 0)}}}, nil,
			`upstream_bind_config.extra_source_addresses[0].address: "pod.local" is not an IP address`},
		{"two extras", &corev3.BindConfig{SourceAddress: bindSock("127.0.0.6", 0),
			AdditionalSourceAddresses: []*corev3.SocketAddress{bindSock("::6", 0), bindSock("::7", 0)}}, nil,
			"upstream_bind_config.additional_source_addresses[1]: only one additional source address is supported"},
		{"extra without source", &corev3.BindConfig{
			ExtraSourceAddresses: []*corev3.ExtraSourceAddress{{Address: bindSock("::6", 0)}}}, nil,
			"upstream_bind_config.extra_source_addresses[0]: needs source_address"},
		{"both extra fields", &corev3.BindConfig{SourceAddress: bindSock("127.0.0.6", 0),
			ExtraSourceAddresses:      []*corev3.ExtraSourceAddress{{Address: bindSock("::6", 0)}},
			AdditionalSourceAddresses: []*corev3.SocketAddress{bindSock("::6", 0)}}, nil,
			"upstream_bind_config.additional_source_addresses: cannot be set together with extra_source_addresses"},
		{"local address selector", &corev3.BindConfig{SourceAddress: bindSock("127.0.0.6", 0),
			LocalAddressSelector: &corev3.TypedExtensionConfig{Name: "custom"}}, nil,
			"upstream_bind_config.local_address_selector: custom local address selectors are not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := staticCluster(clusterv3.Cluster_STATIC, "10.0.0.1")
			in.UpstreamBindConfig = tt.bind
			got, err := DecodeCluster(in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.UpstreamBind, tt.want) {
				t.Errorf("UpstreamBind = %+v, want %+v", got.UpstreamBind, tt.want)
			}
		})
	}
}

// TestDecodeHealthyPanicThreshold: unset stays nil (the balancer's default
// 50%), an explicit 0 is kept (panic mode off), values outside [0, 100] are
// rejected.
func TestDecodeHealthyPanicThreshold(t *testing.T) {
	tests := []struct {
		name    string
		lb      *clusterv3.Cluster_CommonLbConfig
		want    *float64
		wantErr string
	}{
		{"no common_lb_config", nil, nil, ""},
		{"unset", &clusterv3.Cluster_CommonLbConfig{}, nil, ""},
		{"zero disables", &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{}}, new(0.0), ""},
		{"fraction", &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 12.5}}, new(12.5), ""},
		{"hundred", &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 100}}, new(100.0), ""},
		{"over 100", &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 100.5}}, nil,
			`cluster "c": common_lb_config.healthy_panic_threshold.value: 100.5 is not a percentage in [0, 100]`},
		{"negative", &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: -1}}, nil,
			"common_lb_config.healthy_panic_threshold.value: -1 is not a percentage"},
		{"NaN", &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: math.NaN()}}, nil,
			"common_lb_config.healthy_panic_threshold.value: NaN is not a percentage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := edsCluster()
			in.CommonLbConfig = tt.lb
			got, err := DecodeCluster(in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.HealthyPanicThreshold, tt.want) {
				t.Errorf("HealthyPanicThreshold = %v, want %v", got.HealthyPanicThreshold, tt.want)
			}
		})
	}
}
