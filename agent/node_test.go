package agent

import (
	"maps"
	"testing"
)

func TestNodeFromEnv(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		wantID   string
		wantMeta map[string]string
	}{{
		name:     "pod environment",
		env:      map[string]string{"POD_NAME": "app-1", "POD_NAMESPACE": "ns1", "INSTANCE_IP": "10.0.0.5", "SERVICE_ACCOUNT": "app"},
		wantID:   "sidecar~10.0.0.5~app-1.ns1~ns1.svc.cluster.local",
		wantMeta: map[string]string{"NAMESPACE": "ns1", "INSTANCE_IPS": "10.0.0.5", "SERVICE_ACCOUNT": "app"},
	}, {
		name:     "nothing set",
		env:      map[string]string{"POD_NAME": "p"},
		wantID:   "sidecar~127.0.0.1~p.default~default.svc.cluster.local",
		wantMeta: map[string]string{},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := NodeFromEnv(func(k string) string { return tt.env[k] }, "")
			if n.ID != tt.wantID {
				t.Errorf("id %q, want %q", n.ID, tt.wantID)
			}
			// ISTIO_META_ variables of the test process would show up
			// too; only the derived keys are compared.
			got := map[string]string{}
			for _, k := range []string{"NAMESPACE", "INSTANCE_IPS", "SERVICE_ACCOUNT"} {
				if v, ok := n.Metadata[k]; ok {
					got[k] = v
				}
			}
			if !maps.Equal(got, tt.wantMeta) {
				t.Errorf("metadata %v, want %v", got, tt.wantMeta)
			}
		})
	}
}
