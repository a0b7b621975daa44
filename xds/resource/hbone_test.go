package resource

import (
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshlet/meshlet/state"
)

func TestClusterHBONEMetadata(t *testing.T) {
	tests := []struct {
		name    string
		md      map[string]any
		want    *state.HBONE
		wantErr string
	}{
		{"absent", nil, nil, ""},
		{"defaults", map[string]any{}, &state.HBONE{}, ""},
		{"all fields", map[string]any{"port": 15009, "address": "10.0.0.9:15008", "identity": "spiffe://td/ns/a/sa/b"},
			&state.HBONE{Port: 15009, Address: "10.0.0.9:15008", Identity: "spiffe://td/ns/a/sa/b"}, ""},
		{"bad port", map[string]any{"port": 70000}, nil, "meshlet.hbone.port"},
		{"port as string", map[string]any{"port": "15008"}, nil, "meshlet.hbone.port"},
		{"bad address", map[string]any{"address": "gateway:15008"}, nil, "meshlet.hbone.address"},
		{"bad identity", map[string]any{"identity": "cluster.local/ns/a"}, nil, "meshlet.hbone.identity"},
		{"unknown field", map[string]any{"sni": "x"}, nil, "meshlet.hbone.sni"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}
			if tt.md != nil {
				s, err := structpb.NewStruct(tt.md)
				if err != nil {
					t.Fatal(err)
				}
				c.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"meshlet.hbone": s}}
			}
			got, err := DecodeCluster(c)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got.HBONE == nil) != (tt.want == nil) || (tt.want != nil && *got.HBONE != *tt.want) {
				t.Errorf("HBONE = %+v, want %+v", got.HBONE, tt.want)
			}
		})
	}
}
