package resource

import (
	"strings"
	"testing"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds/istiopb/securitypb"
	"github.com/meshlet/meshlet/xds/istiopb/workloadpb"
)

// Enum values from a Workload API newer than meshlet's copy of the proto:
// a descriptive field keeps the resource with an "unknown" reading, a
// field that decides where traffic goes or whom it trusts rejects it with
// the field path. Every case goes through Decode on the wire bytes, as a
// push from istiod would.
func TestDecodeAddressUnknownEnums(t *testing.T) {
	wlAddr := func(f func(w *workloadpb.Workload)) *workloadpb.Address {
		w := testWorkload()
		f(w)
		return &workloadpb.Address{Type: &workloadpb.Address_Workload{Workload: w}}
	}
	svcAddr := func(f func(s *workloadpb.Service)) *workloadpb.Address {
		s := testService()
		f(s)
		return &workloadpb.Address{Type: &workloadpb.Address_Service{Service: s}}
	}
	lbOf := func(v any) *state.LoadBalancing { return v.(*state.Service).LoadBalancing }
	cases := []struct {
		name    string
		in      *workloadpb.Address
		wantErr string             // rejected with this field path and value
		check   func(v any) string // kept: returns what is wrong, or ""
	}{
		{name: "workload_type kept as unknown",
			in: wlAddr(func(w *workloadpb.Workload) { w.WorkloadType = 42 }),
			check: func(v any) string {
				w := v.(*state.Workload)
				if w.WorkloadType != "unknown" || w.Tunnel != state.TunnelHBONE || len(w.Addresses) != 1 {
					return "workload_type " + w.WorkloadType
				}
				return ""
			}},
		{name: "tunnel_protocol rejected",
			in:      wlAddr(func(w *workloadpb.Workload) { w.TunnelProtocol = 7 }),
			wantErr: `workload "Kubernetes//Pod/default/web-1": tunnel_protocol: unknown value 7`},
		{name: "status rejected",
			in:      wlAddr(func(w *workloadpb.Workload) { w.Status = 5 }),
			wantErr: `workload "Kubernetes//Pod/default/web-1": status: unknown value 5`},
		{name: "network_mode rejected",
			in:      wlAddr(func(w *workloadpb.Workload) { w.NetworkMode = 3 }),
			wantErr: `workload "Kubernetes//Pod/default/web-1": network_mode: unknown value 3`},
		{name: "network_mode HOST_NETWORK kept",
			in: wlAddr(func(w *workloadpb.Workload) { w.NetworkMode = workloadpb.NetworkMode_HOST_NETWORK }),
			check: func(v any) string {
				if !v.(*state.Workload).HostNetwork {
					return "HostNetwork false"
				}
				return ""
			}},
		{name: "load_balancing.mode kept as unknown",
			in: svcAddr(func(s *workloadpb.Service) { s.LoadBalancing.Mode = 9 }),
			check: func(v any) string {
				lb := lbOf(v)
				if lb.Mode != state.LBModeUnknown || !lb.Mode.Ranked() || len(lb.RoutingPreference) != 2 {
					return "load balancing " + lb.Mode.String()
				}
				return ""
			}},
		{name: "load_balancing.health_policy kept as ONLY_HEALTHY",
			in: svcAddr(func(s *workloadpb.Service) { s.LoadBalancing.HealthPolicy = 6 }),
			check: func(v any) string {
				if lbOf(v).AllowUnhealthy {
					return "unknown health policy allows unhealthy endpoints"
				}
				return ""
			}},
		{name: "load_balancing.routing_preference kept as unknown scope",
			in: svcAddr(func(s *workloadpb.Service) {
				s.LoadBalancing.RoutingPreference = []workloadpb.LoadBalancing_Scope{99, workloadpb.LoadBalancing_ZONE, -1}
			}),
			check: func(v any) string {
				p := lbOf(v).RoutingPreference
				if len(p) != 3 || p[0] != state.LBScopeUnknown || p[1] != state.LBScopeZone || p[2] != state.LBScopeUnknown {
					return "routing preference wrong"
				}
				return ""
			}},
		{name: "load_balancing.dns_connect_strategy ignored",
			in: svcAddr(func(s *workloadpb.Service) { s.LoadBalancing.DnsConnectStrategy = 8 }),
			check: func(v any) string {
				if lbOf(v).Mode != state.LBModeFailover {
					return "mode " + lbOf(v).Mode.String()
				}
				return ""
			}},
		{name: "ip_families ignored",
			in: svcAddr(func(s *workloadpb.Service) { s.IpFamilies = 12 }),
			check: func(v any) string {
				if s := v.(*state.Service); len(s.Addresses) != 1 || len(s.Ports) != 2 {
					return "service fields lost"
				}
				return ""
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name, v, err := Decode(state.TypeAddress, anyOf(t, c.in, state.TypeAddress))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, c.wantErr)
				}
				if v != nil {
					t.Errorf("value %v returned with an error", v)
				}
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			if name == "" || v == nil {
				t.Fatalf("got %q %v", name, v)
			}
			if msg := c.check(v); msg != "" {
				t.Error(msg)
			}
		})
	}
}

// An Authorization's scope and action decide whom it trusts: a value
// meshlet does not know rejects the policy rather than guessing.
func TestDecodeAuthorizationUnknownEnums(t *testing.T) {
	cases := []struct {
		name string
		mod  func(*securitypb.Authorization)
		want string
	}{
		{"scope", func(a *securitypb.Authorization) { a.Scope = 3 }, `authorization "default/p": scope: unknown value 3`},
		{"action", func(a *securitypb.Authorization) { a.Action = 2 }, `authorization "default/p": action: unknown value 2`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := &securitypb.Authorization{Name: "p", Namespace: "default", Scope: securitypb.Scope_NAMESPACE}
			if _, v, err := Decode(state.TypeAuthorization, anyOf(t, m, state.TypeAuthorization)); err != nil || v == nil {
				t.Fatalf("known values: %v %v", v, err)
			}
			c.mod(m)
			_, v, err := Decode(state.TypeAuthorization, anyOf(t, m, state.TypeAuthorization))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want it to contain %q", err, c.want)
			}
			if v != nil {
				t.Errorf("value %v returned with an error", v)
			}
		})
	}
}
