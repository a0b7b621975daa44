package resource

import (
	"net/netip"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds/istiopb/securitypb"
	"github.com/meshlet/meshlet/xds/istiopb/workloadpb"
)

func ip4(s string) []byte { a := netip.MustParseAddr(s).As4(); return a[:] }

func testWorkload() *workloadpb.Workload {
	return &workloadpb.Workload{
		Uid:            "Kubernetes//Pod/default/web-1",
		Name:           "web-1",
		Namespace:      "default",
		Addresses:      [][]byte{ip4("10.0.0.1")},
		TunnelProtocol: workloadpb.TunnelProtocol_HBONE,
		ServiceAccount: "web",
		Node:           "node-a",
		WorkloadType:   workloadpb.WorkloadType_POD,
		CanonicalName:  "web",
		Services: map[string]*workloadpb.PortList{
			"default/web.default.svc.cluster.local": {Ports: []*workloadpb.Port{{ServicePort: 80, TargetPort: 8080}}},
		},
		AuthorizationPolicies: []string{"default/allow-web"},
		Locality:              &workloadpb.Locality{Region: "r", Zone: "z"},
		Capacity:              wrapperspb.UInt32(3),
		Waypoint: &workloadpb.GatewayAddress{
			Destination:   &workloadpb.GatewayAddress_Address{Address: &workloadpb.NetworkAddress{Address: ip4("10.0.9.9")}},
			HboneMtlsPort: 15008,
		},
	}
}

func testService() *workloadpb.Service {
	return &workloadpb.Service{
		Name: "web", Namespace: "default", Hostname: "web.default.svc.cluster.local",
		Addresses: []*workloadpb.NetworkAddress{{Address: ip4("10.96.0.10")}},
		Ports:     []*workloadpb.Port{{ServicePort: 80, TargetPort: 8080}, {ServicePort: 443}},
		LoadBalancing: &workloadpb.LoadBalancing{
			Mode:              workloadpb.LoadBalancing_FAILOVER,
			RoutingPreference: []workloadpb.LoadBalancing_Scope{workloadpb.LoadBalancing_NODE, workloadpb.LoadBalancing_ZONE},
		},
	}
}

func anyOf(t testing.TB, m proto.Message, typeURL string) *anypb.Any {
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return &anypb.Any{TypeUrl: typeURL, Value: b}
}

func TestDecodeAddressWorkload(t *testing.T) {
	addr := &workloadpb.Address{Type: &workloadpb.Address_Workload{Workload: testWorkload()}}
	name, v, err := Decode(state.TypeAddress, anyOf(t, addr, state.TypeAddress))
	if err != nil {
		t.Fatal(err)
	}
	w, ok := v.(*state.Workload)
	if !ok || name != "Kubernetes//Pod/default/web-1" || w.UID != name {
		t.Fatalf("got %q %#v", name, v)
	}
	if w.Identity() != "spiffe://cluster.local/ns/default/sa/web" {
		t.Errorf("identity = %s (trust domain default not applied?)", w.Identity())
	}
	if len(w.Addresses) != 1 || w.Addresses[0] != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("addresses = %v", w.Addresses)
	}
	if w.Tunnel != state.TunnelHBONE || w.Node != "node-a" || w.WorkloadType != "pod" || w.Capacity != 3 {
		t.Errorf("workload = %+v", w)
	}
	if p := w.Services["default/web.default.svc.cluster.local"]; len(p) != 1 || p[0] != (state.PortMapping{ServicePort: 80, TargetPort: 8080}) {
		t.Errorf("services = %v", w.Services)
	}
	if w.Waypoint == nil || w.Waypoint.Address.Addr != netip.MustParseAddr("10.0.9.9") || w.Waypoint.HBONEPort != 15008 {
		t.Errorf("waypoint = %+v", w.Waypoint)
	}
	if w.Locality.Zone != "z" || len(w.AuthorizationPolicies) != 1 {
		t.Errorf("locality/policies = %+v %v", w.Locality, w.AuthorizationPolicies)
	}
}

func TestDecodeAddressService(t *testing.T) {
	addr := &workloadpb.Address{Type: &workloadpb.Address_Service{Service: testService()}}
	name, v, err := Decode(state.TypeAddress, anyOf(t, addr, state.TypeAddress))
	if err != nil {
		t.Fatal(err)
	}
	s, ok := v.(*state.Service)
	if !ok || name != "default/web.default.svc.cluster.local" {
		t.Fatalf("got %q %#v", name, v)
	}
	if len(s.Addresses) != 1 || s.Addresses[0].Addr != netip.MustParseAddr("10.96.0.10") {
		t.Errorf("addresses = %v", s.Addresses)
	}
	if s.LoadBalancing == nil || s.LoadBalancing.Mode != state.LBModeFailover ||
		len(s.LoadBalancing.RoutingPreference) != 2 || s.LoadBalancing.RoutingPreference[0] != state.LBScopeNode {
		t.Errorf("load balancing = %+v", s.LoadBalancing)
	}
	if tp, ok := s.TargetPort(nil, 80); !ok || tp != 8080 {
		t.Errorf("target port 80 = %d %v", tp, ok)
	}
	if tp, ok := s.TargetPort(nil, 443); !ok || tp != 443 {
		t.Errorf("target port 443 (unset target) = %d %v", tp, ok)
	}
}

func TestDecodeAddressErrors(t *testing.T) {
	mut := func(f func(w *workloadpb.Workload)) *workloadpb.Address {
		w := testWorkload()
		f(w)
		return &workloadpb.Address{Type: &workloadpb.Address_Workload{Workload: w}}
	}
	smut := func(f func(s *workloadpb.Service)) *workloadpb.Address {
		s := testService()
		f(s)
		return &workloadpb.Address{Type: &workloadpb.Address_Service{Service: s}}
	}
	cases := []struct {
		name string
		in   *workloadpb.Address
		want string
	}{
		{"empty address", &workloadpb.Address{}, "one of workload or service is required"},
		{"no uid", mut(func(w *workloadpb.Workload) { w.Uid = "" }), `workload "": uid: is required`},
		{"bad ip", mut(func(w *workloadpb.Workload) { w.Addresses = append(w.Addresses, []byte{1, 2, 3}) }),
			`workload "Kubernetes//Pod/default/web-1": addresses[1]: 3 bytes is not an IPv4 or IPv6 address`},
		{"no address nor hostname", mut(func(w *workloadpb.Workload) { w.Addresses = nil }), "addresses: one of addresses or hostname is required"},
		{"unknown tunnel", mut(func(w *workloadpb.Workload) { w.TunnelProtocol = 7 }), "tunnel_protocol: unknown value 7"},
		{"bad services key", mut(func(w *workloadpb.Workload) {
			w.Services = map[string]*workloadpb.PortList{"nohost": {}}
		}), `services["nohost"]: key must be namespace/hostname`},
		{"bad service port in workload", mut(func(w *workloadpb.Workload) {
			w.Services = map[string]*workloadpb.PortList{"a/b": {Ports: []*workloadpb.Port{{ServicePort: 70000}}}}
		}), `services["a/b"].ports[0].service_port: 70000 is not a port`},
		{"waypoint without destination", mut(func(w *workloadpb.Workload) { w.Waypoint = &workloadpb.GatewayAddress{} }),
			"waypoint.destination: one of hostname or address is required"},
		{"service without hostname", smut(func(s *workloadpb.Service) { s.Hostname = "" }), `service "default/": hostname: is required`},
		{"service bad vip", smut(func(s *workloadpb.Service) { s.Addresses[0].Address = []byte{1} }), "addresses[0].address: 1 bytes"},
		{"service zero port", smut(func(s *workloadpb.Service) { s.Ports[0].ServicePort = 0 }), "ports[0].service_port: 0 is not a port"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, v, err := Decode(state.TypeAddress, anyOf(t, c.in, state.TypeAddress))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
			if v != nil {
				t.Errorf("value %v returned with an error", v)
			}
		})
	}
}

func TestDecodeAuthorization(t *testing.T) {
	m := &securitypb.Authorization{
		Name: "deny-web", Namespace: "default", Scope: securitypb.Scope_NAMESPACE, Action: securitypb.Action_DENY,
		Groups: []*securitypb.Group{{Rules: []*securitypb.Rules{{Matches: []*securitypb.Match{{
			Principals:          []*securitypb.StringMatch{{MatchType: &securitypb.StringMatch_Exact{Exact: "cluster.local/ns/default/sa/web"}}},
			NotNamespaces:       []*securitypb.StringMatch{{MatchType: &securitypb.StringMatch_Presence{Presence: &emptypb.Empty{}}}},
			SourceIps:           []*securitypb.Address{{Address: ip4("10.1.2.3"), Length: 16}},
			DestinationPorts:    []uint32{8080},
			NotDestinationPorts: []uint32{9090},
		}}}}}},
	}
	name, v, err := Decode(state.TypeAuthorization, anyOf(t, m, state.TypeAuthorization))
	if err != nil {
		t.Fatal(err)
	}
	a := v.(*state.Authorization)
	if name != "default/deny-web" || a.Key() != name || a.Action != state.AuthzDeny || a.Scope != state.AuthzNamespace {
		t.Fatalf("got %q %+v", name, a)
	}
	mt := a.Groups[0].Rules[0].Matches[0]
	if mt.SourceIPs[0] != netip.MustParsePrefix("10.1.0.0/16") {
		t.Errorf("source ip = %v, want masked 10.1.0.0/16", mt.SourceIPs[0])
	}
	if mt.Principals[0] != (state.AuthzString{Kind: state.AuthzExact, Value: "cluster.local/ns/default/sa/web"}) ||
		mt.NotNamespaces[0].Kind != state.AuthzPresence || mt.DestinationPorts[0] != 8080 || mt.NotDestinationPorts[0] != 9090 {
		t.Errorf("match = %+v", mt)
	}

	bad := []struct {
		name string
		mod  func(*securitypb.Authorization)
		want string
	}{
		{"no name", func(a *securitypb.Authorization) { a.Name = "" }, "name: is required"},
		{"unknown action", func(a *securitypb.Authorization) { a.Action = 5 }, "action: unknown value 5"},
		{"prefix too long", func(a *securitypb.Authorization) {
			a.Groups[0].Rules[0].Matches[0].SourceIps[0].Length = 33
		}, "groups[0].rules[0].matches[0].source_ips[0].length: 33 exceeds 32 bits"},
		{"port out of range", func(a *securitypb.Authorization) {
			a.Groups[0].Rules[0].Matches[0].DestinationPorts = []uint32{1 << 20}
		}, "destination_ports[0]: 1048576 is not a port"},
		{"empty string match", func(a *securitypb.Authorization) {
			a.Groups[0].Rules[0].Matches[0].Principals = []*securitypb.StringMatch{{}}
		}, "principals[0]: match_type is required"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			m2 := proto.Clone(m).(*securitypb.Authorization)
			c.mod(m2)
			_, v, err := Decode(state.TypeAuthorization, anyOf(t, m2, state.TypeAuthorization))
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `authorization "default/`) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
			if v != nil {
				t.Errorf("value with error")
			}
		})
	}
}

// FuzzDecodeWorkload feeds serialized Address bytes to Decode: it must
// never panic, and a success must be a workload or service whose name is
// its key and whose addresses are valid.
func FuzzDecodeWorkload(f *testing.F) {
	for _, m := range []*workloadpb.Address{
		{Type: &workloadpb.Address_Workload{Workload: testWorkload()}},
		{Type: &workloadpb.Address_Service{Service: testService()}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		name, v, err := Decode(state.TypeAddress, &anypb.Any{TypeUrl: state.TypeAddress, Value: b})
		if err != nil {
			if v != nil {
				t.Fatalf("value %v returned with error %v", v, err)
			}
			return
		}
		switch x := v.(type) {
		case *state.Workload:
			if x.UID != name || name == "" {
				t.Fatalf("workload name %q uid %q", name, x.UID)
			}
			for _, a := range x.Addresses {
				if !a.IsValid() || a.Is4In6() {
					t.Fatalf("bad address %v", a)
				}
			}
			_ = state.NewAmbient(map[string]*state.Workload{name: x}, nil, nil)
		case *state.Service:
			if x.Key() != name {
				t.Fatalf("service name %q key %q", name, x.Key())
			}
		default:
			t.Fatalf("decoded %T", v)
		}
	})
}
