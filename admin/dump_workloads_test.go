package admin

import (
	"encoding/json"
	"net/netip"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func ambientStore() *state.Store {
	st := state.NewStore()
	st.Update(func(s *state.Snapshot) bool {
		s.Ambient = (*state.Ambient)(nil).Apply(state.AmbientDelta{
			Workloads: []*state.Workload{
				{UID: "b", Namespace: "ns", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.2")}, Tunnel: state.TunnelHBONE},
				{UID: "a", Namespace: "ns", Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.1")}},
			},
			Services: []*state.Service{{Name: "web", Namespace: "ns", Hostname: "web.ns.svc.cluster.local"}},
			Policies: []*state.Authorization{{Name: "deny", Namespace: "ns", Action: state.AuthzDeny}},
		})
		return true
	})
	return st
}

type workloadDumpView struct {
	Workloads []struct {
		UID       string
		Addresses []string
		Tunnel    string
	} `json:"workloads"`
	Services []struct{ Hostname string }     `json:"services"`
	Policies []struct{ Name, Action string } `json:"policies"`
	Configs  []any                           `json:"configs"`
}

func TestConfigDumpWorkloads(t *testing.T) {
	for _, c := range []struct {
		name string
		deps Deps
	}{
		{"state dump", Deps{Store: ambientStore()}},
		{"envoy-shaped dump", Deps{Store: ambientStore(), OpsDeps: OpsDeps{ConfigDump: func() ([]byte, error) {
			return []byte(`{"configs":[{"@type":"x"}]}`), nil
		}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := get(t, startAdmin(t, c.deps)+"/config_dump")
			if code != 200 {
				t.Fatalf("status %d", code)
			}
			var d workloadDumpView
			if err := json.Unmarshal([]byte(body), &d); err != nil {
				t.Fatal(err)
			}
			if len(d.Workloads) != 2 || d.Workloads[0].UID != "a" || d.Workloads[1].Tunnel != "HBONE" ||
				d.Workloads[0].Addresses[0] != "10.0.0.1" {
				t.Errorf("workloads = %+v", d.Workloads)
			}
			if len(d.Services) != 1 || len(d.Policies) != 1 || d.Policies[0].Action != "DENY" {
				t.Errorf("services/policies = %+v %+v", d.Services, d.Policies)
			}
			if c.deps.ConfigDump != nil && len(d.Configs) != 1 {
				t.Errorf("envoy configs lost: %s", body)
			}
		})
	}
	// Without Workload API state nothing is added.
	code, body := get(t, startAdmin(t, Deps{Store: state.NewStore()})+"/config_dump")
	var d map[string]any
	if code != 200 || json.Unmarshal([]byte(body), &d) != nil || d["workloads"] != nil {
		t.Errorf("dump without workloads = %d %s", code, body)
	}
}
