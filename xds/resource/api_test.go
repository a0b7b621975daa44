package resource

import (
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

func TestDecodeDispatch(t *testing.T) {
	rc := simpleRouteConfig()
	bad := tcpListener(t)
	bad.FilterChains[0].Filters[0] = tcpProxyFilter(t, &tcpproxyv3.TcpProxy{})
	tests := []struct {
		name     string
		typeURL  string
		raw      *anypb.Any
		wantName string
		wantType any
		wantErr  string
	}{
		{"listener", state.TypeListener, mustAny(t, tcpListener(t)), "in", &state.Listener{}, ""},
		{"route", state.TypeRoute, mustAny(t, rc), "r", &state.RouteConfig{}, ""},
		{"cluster", state.TypeCluster, mustAny(t, edsCluster()), "c", &state.Cluster{}, ""},
		{"endpoints", state.TypeEndpoint, mustAny(t, staticCluster(0, "10.0.0.1").LoadAssignment), "c", &state.ClusterLoadAssignment{}, ""},
		{"invalid listener keeps name", state.TypeListener, mustAny(t, bad), "in", nil, `listener "in": filter_chains[0].filters[0].typed_config: tcp_proxy: cluster_specifier is required`},
		{"type mismatch", state.TypeCluster, mustAny(t, rc), "", nil, "got type type.googleapis.com/envoy.config.route.v3.RouteConfiguration"},
		{"garbage bytes", state.TypeListener, &anypb.Any{TypeUrl: state.TypeListener, Value: []byte{0xff, 0xff}}, "", nil, "listener:"},
		{"unsupported type", state.TypeVirtualHost, &anypb.Any{TypeUrl: state.TypeVirtualHost}, "", nil, "not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			name, v, err := Decode(tc.typeURL, tc.raw)
			if name != tc.wantName {
				t.Errorf("name = %q, want %q", name, tc.wantName)
			}
			if tc.wantErr != "" {
				wantErr(t, err, tc.wantErr)
				if v != nil {
					t.Errorf("value = %#v with error", v)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got, want := typeName(v), typeName(tc.wantType); got != want {
				t.Errorf("value type %s, want %s", got, want)
			}
		})
	}
}

func typeName(v any) string {
	switch v.(type) {
	case *state.Listener:
		return "Listener"
	case *state.RouteConfig:
		return "RouteConfig"
	case *state.Cluster:
		return "Cluster"
	case *state.ClusterLoadAssignment:
		return "ClusterLoadAssignment"
	}
	return "other"
}

func TestReferencesListener(t *testing.T) {
	l := tcpListener(t)
	l.FilterChains = []*listenerv3.FilterChain{
		{Name: "a", FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "tls"}, Filters: []*listenerv3.Filter{hcmFilter(t, rdsHCM(t, "r1"))}},
		{Name: "b", FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}, Filters: []*listenerv3.Filter{hcmFilter(t, rdsHCM(t, "r1"))}},
		{Name: "c", FilterChainMatch: &listenerv3.FilterChainMatch{DestinationPort: nil, ServerNames: []string{"x"}}, Filters: l.FilterChains[0].Filters},
	}
	l.DefaultFilterChain = &listenerv3.FilterChain{Filters: []*listenerv3.Filter{hcmFilter(t, rdsHCM(t, "r2"))}}
	v, err := DecodeListener(l)
	if err != nil {
		t.Fatal(err)
	}
	routes, eds := References(v)
	if len(routes) != 2 || routes[0] != "r1" || routes[1] != "r2" || eds != nil {
		t.Errorf("References = %v, %v", routes, eds)
	}
	if r, e := References(&state.RouteConfig{}); r != nil || e != nil {
		t.Errorf("route config references %v %v", r, e)
	}
	if r, e := References(nil); r != nil || e != nil {
		t.Errorf("nil references %v %v", r, e)
	}
}

// Decoding must never mutate the input or panic on a round-tripped proto.
func TestDecodeDoesNotMutate(t *testing.T) {
	l := tcpListener(t)
	before := proto.Clone(l)
	if _, err := DecodeListener(l); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(before, l) {
		t.Error("DecodeListener modified its input")
	}
}
