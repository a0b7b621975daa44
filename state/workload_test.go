package state

import (
	"net/netip"
	"testing"
)

func TestAmbientIndex(t *testing.T) {
	ip := netip.MustParseAddr
	svc := &Service{Name: "web", Namespace: "ns", Hostname: "web.ns.svc.cluster.local",
		Addresses: []NetworkAddr{{Addr: ip("10.96.0.1")}}, Ports: []PortMapping{{ServicePort: 80, TargetPort: 8080}}}
	w1 := &Workload{UID: "w1", Namespace: "ns", Addresses: []netip.Addr{ip("10.0.0.1")},
		Services: map[string][]PortMapping{svc.Key(): {{ServicePort: 80, TargetPort: 9090}}}, AuthorizationPolicies: []string{"ns/sel", "ns/missing"}}
	w2 := &Workload{UID: "w2", Namespace: "other", Network: "net2", Addresses: []netip.Addr{ip("10.0.0.1")},
		Services: map[string][]PortMapping{svc.Key(): nil}}
	host := &Workload{UID: "h", Namespace: "ns", Addresses: []netip.Addr{ip("10.0.0.9")}, HostNetwork: true}
	pol := map[string]*Authorization{
		"root/global": {Name: "global", Namespace: "root", Scope: AuthzGlobal},
		"ns/nsp":      {Name: "nsp", Namespace: "ns", Scope: AuthzNamespace},
		"other/nsp":   {Name: "nsp", Namespace: "other", Scope: AuthzNamespace},
		"ns/sel":      {Name: "sel", Namespace: "ns", Scope: AuthzWorkloadSelector},
	}
	a := (*Ambient)(nil).Apply(AmbientDelta{Workloads: []*Workload{w1, w2, host}, Services: []*Service{svc}})
	a = NewAmbient(a.Workloads, a.Services, pol)

	if got := a.WorkloadByAddr("", ip("10.0.0.1")); got != w1 {
		t.Errorf("by addr default network = %v", got)
	}
	if got := a.WorkloadByAddr("net2", ip("::ffff:10.0.0.1")); got != w2 {
		t.Errorf("by mapped addr net2 = %v", got)
	}
	if got := a.WorkloadByAddr("", ip("10.0.0.9")); got != nil {
		t.Errorf("host-network workload found by address: %v", got)
	}
	if got := a.ServiceByVIP("", ip("10.96.0.1")); got != svc {
		t.Errorf("by vip = %v", got)
	}
	if got := a.ServicesByHostname("web.ns.svc.cluster.local"); len(got) != 1 {
		t.Errorf("by hostname = %v", got)
	}
	if eps := a.Endpoints(svc.Key()); len(eps) != 2 || eps[0] != w1 || eps[1] != w2 {
		t.Errorf("endpoints = %v", eps)
	}
	if tp, _ := svc.TargetPort(w1, 80); tp != 9090 {
		t.Errorf("workload override target = %d, want 9090", tp)
	}
	if tp, _ := svc.TargetPort(w2, 80); tp != 8080 {
		t.Errorf("service target = %d, want 8080", tp)
	}
	if _, ok := svc.TargetPort(w1, 81); ok {
		t.Error("port 81 is not a service port")
	}
	keys := func(ps []*Authorization) (out []string) {
		for _, p := range ps {
			out = append(out, p.Key())
		}
		return out
	}
	if got := keys(a.PoliciesFor(w1)); len(got) != 3 || got[0] != "root/global" || got[1] != "ns/nsp" || got[2] != "ns/sel" {
		t.Errorf("policies for w1 = %v", got)
	}
	if got := keys(a.PoliciesFor(w2)); len(got) != 2 || got[1] != "other/nsp" {
		t.Errorf("policies for w2 = %v", got)
	}

	b := a.Apply(AmbientDelta{RemovedAddresses: []string{"w1", svc.Key()}, RemovedPolicies: []string{"ns/sel"}})
	if b.Workload("w1") != nil || b.ServiceByVIP("", ip("10.96.0.1")) != nil || b.Policies["ns/sel"] != nil {
		t.Error("removal did not remove")
	}
	if a.Workload("w1") == nil {
		t.Error("Apply modified its receiver")
	}
	var nilA *Ambient
	if nilA.WorkloadByAddr("", ip("10.0.0.1")) != nil || nilA.PoliciesFor(w1) != nil {
		t.Error("nil Ambient must answer nothing")
	}
}

func TestWorkloadIdentity(t *testing.T) {
	w := &Workload{TrustDomain: "td", Namespace: "n", ServiceAccount: "s"}
	if w.Identity() != "spiffe://td/ns/n/sa/s" {
		t.Error(w.Identity())
	}
}
