package istiopb_test

import (
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/xds/istiopb/securitypb"
	"github.com/meshlet/meshlet/xds/istiopb/workloadpb"
)

// The xDS type URLs and the wire format depend on these names and numbers
// being exactly Istio's.
func TestFullNamesAreIstios(t *testing.T) {
	cases := []struct {
		msg  proto.Message
		name protoreflect.FullName
	}{
		{&workloadpb.Address{}, "istio.workload.Address"},
		{&workloadpb.Workload{}, "istio.workload.Workload"},
		{&workloadpb.Service{}, "istio.workload.Service"},
		{&workloadpb.LoadBalancing{}, "istio.workload.LoadBalancing"},
		{&workloadpb.GatewayAddress{}, "istio.workload.GatewayAddress"},
		{&securitypb.Authorization{}, "istio.security.Authorization"},
		{&securitypb.Match{}, "istio.security.Match"},
	}
	for _, c := range cases {
		if got := c.msg.ProtoReflect().Descriptor().FullName(); got != c.name {
			t.Errorf("full name = %s, want %s", got, c.name)
		}
	}
	a, err := anypb.New(&workloadpb.Address{})
	if err != nil {
		t.Fatal(err)
	}
	if a.TypeUrl != "type.googleapis.com/istio.workload.Address" {
		t.Errorf("type url = %s", a.TypeUrl)
	}
}

func TestFieldNumbersAreIstios(t *testing.T) {
	cases := []struct {
		msg    proto.Message
		fields map[protoreflect.Name]protoreflect.FieldNumber
	}{
		{&workloadpb.Address{}, map[protoreflect.Name]protoreflect.FieldNumber{"workload": 1, "service": 2}},
		{&workloadpb.Workload{}, map[protoreflect.Name]protoreflect.FieldNumber{
			"uid": 20, "name": 1, "namespace": 2, "addresses": 3, "hostname": 21, "network": 4,
			"tunnel_protocol": 5, "trust_domain": 6, "service_account": 7, "waypoint": 8,
			"network_gateway": 19, "node": 9, "canonical_name": 10, "canonical_revision": 11,
			"workload_type": 12, "workload_name": 13, "native_tunnel": 14, "application_tunnel": 23,
			"services": 22, "authorization_policies": 16, "status": 17, "cluster_id": 18,
			"locality": 24, "network_mode": 25, "extensions": 26, "capacity": 27,
		}},
		{&workloadpb.Service{}, map[protoreflect.Name]protoreflect.FieldNumber{
			"name": 1, "namespace": 2, "hostname": 3, "addresses": 4, "ports": 5,
			"subject_alt_names": 6, "waypoint": 7, "load_balancing": 8, "ip_families": 9,
			"extensions": 10, "canonical": 11,
		}},
		{&workloadpb.LoadBalancing{}, map[protoreflect.Name]protoreflect.FieldNumber{
			"routing_preference": 1, "mode": 2, "health_policy": 3, "dns_connect_strategy": 4,
		}},
		{&workloadpb.NetworkAddress{}, map[protoreflect.Name]protoreflect.FieldNumber{"network": 1, "address": 2}},
		{&workloadpb.Port{}, map[protoreflect.Name]protoreflect.FieldNumber{"service_port": 1, "target_port": 2}},
		{&securitypb.Authorization{}, map[protoreflect.Name]protoreflect.FieldNumber{
			"name": 1, "namespace": 2, "scope": 3, "action": 4, "groups": 5,
		}},
		{&securitypb.Group{}, map[protoreflect.Name]protoreflect.FieldNumber{"rules": 1}},
		{&securitypb.Rules{}, map[protoreflect.Name]protoreflect.FieldNumber{"matches": 2}},
		{&securitypb.Match{}, map[protoreflect.Name]protoreflect.FieldNumber{
			"namespaces": 1, "not_namespaces": 2, "principals": 3, "not_principals": 4,
			"source_ips": 5, "not_source_ips": 6, "destination_ips": 7, "not_destination_ips": 8,
			"destination_ports": 9, "not_destination_ports": 10,
		}},
		{&securitypb.StringMatch{}, map[protoreflect.Name]protoreflect.FieldNumber{"exact": 1, "prefix": 2, "suffix": 3, "presence": 4}},
	}
	for _, c := range cases {
		d := c.msg.ProtoReflect().Descriptor()
		// meshlet's extension fields (numbers from 1000, see
		// meshletExtensions) are not Istio's and not counted here.
		istio := 0
		for i := 0; i < d.Fields().Len(); i++ {
			if d.Fields().Get(i).Number() < 1000 {
				istio++
			}
		}
		if istio != len(c.fields) {
			t.Errorf("%s: %d fields, want %d", d.FullName(), istio, len(c.fields))
		}
		for name, num := range c.fields {
			f := d.Fields().ByName(name)
			if f == nil {
				t.Errorf("%s: no field %s", d.FullName(), name)
				continue
			}
			if f.Number() != num {
				t.Errorf("%s.%s = %d, want %d", d.FullName(), name, f.Number(), num)
			}
		}
	}
}

// meshlet's own fields are numbered far above Istio's so that they never
// collide with a field Istio adds; Istio's ztunnel skips them as unknown.
func TestMeshletExtensionFields(t *testing.T) {
	cases := []struct {
		msg    proto.Message
		fields map[protoreflect.Name]protoreflect.FieldNumber
	}{
		{&workloadpb.Workload{}, map[protoreflect.Name]protoreflect.FieldNumber{"allow_waypoint_bypass": 1001}},
		{&securitypb.Match{}, map[protoreflect.Name]protoreflect.FieldNumber{
			"paths": 1001, "not_paths": 1002, "methods": 1003, "not_methods": 1004, "hosts": 1005, "not_hosts": 1006,
		}},
	}
	for _, c := range cases {
		d := c.msg.ProtoReflect().Descriptor()
		ext := 0
		for i := 0; i < d.Fields().Len(); i++ {
			if d.Fields().Get(i).Number() >= 1000 {
				ext++
			}
		}
		if ext != len(c.fields) {
			t.Errorf("%s: %d extension fields, want %d", d.FullName(), ext, len(c.fields))
		}
		for name, num := range c.fields {
			if f := d.Fields().ByName(name); f == nil || f.Number() != num {
				t.Errorf("%s.%s: %v, want number %d", d.FullName(), name, f, num)
			}
		}
	}
}

func TestEnumValuesAreIstios(t *testing.T) {
	if workloadpb.TunnelProtocol_HBONE != 1 || workloadpb.WorkloadStatus_UNHEALTHY != 1 ||
		workloadpb.LoadBalancing_PASSTHROUGH != 3 || workloadpb.LoadBalancing_NETWORK != 6 ||
		workloadpb.WorkloadType_JOB != 3 || workloadpb.NetworkMode_HOST_NETWORK != 1 {
		t.Error("workload enum values differ from Istio's")
	}
	if securitypb.Action_DENY != 1 || securitypb.Scope_WORKLOAD_SELECTOR != 2 {
		t.Error("security enum values differ from Istio's")
	}
}
