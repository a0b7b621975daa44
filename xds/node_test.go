package xds

import (
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestNodeFromEnviron(t *testing.T) {
	hostname = func() (string, error) { return "host-1", nil }
	t.Cleanup(func() { hostname = defaultHostname })
	tests := []struct {
		name        string
		env         []string
		mode        string
		wantID      string
		wantCluster string
		wantMeta    map[string]string
	}{
		{
			name:        "sidecar with pod env",
			env:         []string{"POD_NAME=web-1", "POD_NAMESPACE=shop", "INSTANCE_IP=10.1.2.3", "ISTIO_META_CLUSTER_ID=Kubernetes", "ISTIO_META_WORKLOAD_NAME=web", "PATH=/bin"},
			mode:        "sidecar",
			wantID:      "sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local",
			wantCluster: "web.shop",
			wantMeta:    map[string]string{"CLUSTER_ID": "Kubernetes", "WORKLOAD_NAME": "web"},
		},
		{
			name:        "ztunnel with fallbacks",
			env:         []string{"ISTIO_META_=ignored", "ISTIO_META_EMPTY="},
			mode:        "ztunnel",
			wantID:      "ztunnel~127.0.0.1~host-1.default~default.svc.cluster.local",
			wantCluster: "istio-proxy",
			wantMeta:    map[string]string{},
		},
		{
			name:        "empty mode is sidecar",
			env:         []string{"POD_NAME=a", "POD_NAMESPACE=b", "INSTANCE_IP=fd00::1"},
			wantID:      "sidecar~fd00::1~a.b~b.svc.cluster.local",
			wantCluster: "istio-proxy",
			wantMeta:    map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := NodeFromEnviron(tt.env, tt.mode)
			if n.ID != tt.wantID || n.Cluster != tt.wantCluster {
				t.Errorf("node = %q cluster %q, want %q cluster %q", n.ID, n.Cluster, tt.wantID, tt.wantCluster)
			}
			if len(n.Metadata) != len(tt.wantMeta) {
				t.Errorf("metadata = %v, want %v", n.Metadata, tt.wantMeta)
			}
			for k, v := range tt.wantMeta {
				if n.Metadata[k] != v {
					t.Errorf("metadata[%s] = %q, want %q", k, n.Metadata[k], v)
				}
			}
		})
	}
}

func TestNodeFromEnvUsesGetenvValues(t *testing.T) {
	t.Setenv("ISTIO_META_MESH_ID", "from-process")
	env := map[string]string{"ISTIO_META_MESH_ID": "from-getenv", "POD_NAME": "p", "POD_NAMESPACE": "n", "INSTANCE_IP": "10.0.0.9"}
	n := NodeFromEnv(func(k string) string { return env[k] }, "sidecar")
	if n.Metadata["MESH_ID"] != "from-getenv" || n.ID != "sidecar~10.0.0.9~p.n~n.svc.cluster.local" {
		t.Errorf("node = %+v, want MESH_ID from getenv and the pod id", n)
	}
}

func TestNodeProto(t *testing.T) {
	n := Node{ID: "id", Cluster: "c", Metadata: map[string]string{"CLUSTER_ID": "k8s", "LABELS": "x"}, Locality: state.Locality{Region: "r", Zone: "z"}}
	p, err := n.proto()
	if err != nil {
		t.Fatal(err)
	}
	if p.GetId() != "id" || p.GetCluster() != "c" || p.GetLocality().GetRegion() != "r" || p.GetLocality().GetZone() != "z" {
		t.Errorf("proto = %v", p)
	}
	f := p.GetMetadata().GetFields()
	if f["CLUSTER_ID"].GetStringValue() != "k8s" || f["LABELS"].GetStringValue() != "x" || len(f) != 2 {
		t.Errorf("metadata struct = %v, want the two string fields", p.GetMetadata())
	}
	if p2, _ := (Node{ID: "x"}).proto(); p2.GetMetadata() != nil || p2.GetLocality() != nil {
		t.Errorf("empty node proto = %v, want no metadata or locality", p2)
	}
}
