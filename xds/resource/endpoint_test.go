package resource

import (
	"reflect"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

func TestDecodeEndpoints(t *testing.T) {
	weighted := lbEndpoint("10.0.0.2", 8080)
	weighted.LoadBalancingWeight = wrapperspb.UInt32(5)
	weighted.HealthStatus = corev3.HealthStatus_DEGRADED
	weighted.GetEndpoint().Hostname = "pod-2"
	cla := &endpointv3.ClusterLoadAssignment{
		ClusterName: "svc",
		Endpoints: []*endpointv3.LocalityLbEndpoints{
			{
				Locality:            &corev3.Locality{Region: "r", Zone: "z", SubZone: "s"},
				LoadBalancingWeight: wrapperspb.UInt32(3),
				LbEndpoints:         []*endpointv3.LbEndpoint{lbEndpoint("10.0.0.1", 8080), weighted},
			},
			{Priority: 1, LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint("fe80::1", 443)}},
		},
		Policy: &endpointv3.ClusterLoadAssignment_Policy{OverprovisioningFactor: wrapperspb.UInt32(200)},
	}
	got, err := DecodeEndpoints(cla)
	if err != nil {
		t.Fatal(err)
	}
	want := &state.ClusterLoadAssignment{
		ClusterName: "svc",
		Localities: []state.LocalityEndpoints{
			{
				Locality: state.Locality{Region: "r", Zone: "z", SubZone: "s"}, Weight: 3,
				Endpoints: []state.Endpoint{
					{Address: "10.0.0.1:8080", Port: 8080, Weight: 1},
					{Address: "10.0.0.2:8080", Hostname: "pod-2", Port: 8080, Weight: 5, Health: state.HealthDegraded},
				},
			},
			{Priority: 1, Endpoints: []state.Endpoint{{Address: "[fe80::1]:443", Port: 443, Weight: 1}}},
		},
		OverprovisioningFactor: 200,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
	cla.Policy = nil
	if got, _ := DecodeEndpoints(cla); got.OverprovisioningFactor != 140 {
		t.Errorf("default overprovisioning = %d", got.OverprovisioningFactor)
	}
}

func TestDecodeEndpointsErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*endpointv3.ClusterLoadAssignment)
		want []string
	}{
		{"priority gap", func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints = append(c.Endpoints, &endpointv3.LocalityLbEndpoints{Priority: 2})
		}, []string{`cluster_load_assignment "svc": endpoints: priorities must be contiguous from 0: priority 1 is missing`}},
		{"hostname", func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[0].LbEndpoints[0] = lbEndpoint("backend", 80)
		}, []string{"endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address"}},
		{"zero weight", func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0)
		}, []string{"endpoints[0].lb_endpoints[0].load_balancing_weight"}},
		{"no port", func(c *endpointv3.ClusterLoadAssignment) {
			c.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().PortSpecifier = nil
		}, []string{"endpoint.address.socket_address.port_value: is required"}},
		{"drop overloads", func(c *endpointv3.ClusterLoadAssignment) {
			c.Policy = &endpointv3.ClusterLoadAssignment_Policy{DropOverloads: []*endpointv3.ClusterLoadAssignment_Policy_DropOverload{{Category: "x"}}}
		}, []string{"policy.drop_overloads"}},
		{"no name", func(c *endpointv3.ClusterLoadAssignment) { c.ClusterName = "" }, []string{"cluster_name: is required"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cla := &endpointv3.ClusterLoadAssignment{ClusterName: "svc", Endpoints: []*endpointv3.LocalityLbEndpoints{
				{LbEndpoints: []*endpointv3.LbEndpoint{lbEndpoint("10.0.0.1", 80)}},
			}}
			tc.edit(cla)
			_, err := DecodeEndpoints(cla)
			wantErr(t, err, tc.want...)
		})
	}
}
