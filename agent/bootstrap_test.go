package agent

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds"
)

func TestBootstrap(t *testing.T) {
	node := xds.Node{
		ID: "sidecar~10.0.0.5~app-1.ns1~ns1.svc.cluster.local", Cluster: "app.ns1",
		Metadata: map[string]string{"NAMESPACE": "ns1"},
	}
	files := &CertFiles{Cert: "/c/cert-chain.pem", Key: "/c/key.pem", Root: "/c/root-cert.pem"}
	tests := []struct {
		name string
		opts BootstrapOptions
		want map[string]any // top-level keys compared after a JSON round trip
		err  bool
	}{{
		name: "unix socket with certificates",
		opts: BootstrapOptions{ServerURI: "unix:///etc/istio/proxy/XDS", Node: node, Certs: files, Refresh: 900 * time.Second},
		want: map[string]any{
			"xds_servers": []any{map[string]any{
				"server_uri":      "unix:///etc/istio/proxy/XDS",
				"channel_creds":   []any{map[string]any{"type": "insecure"}},
				"server_features": []any{"xds_v3"},
			}},
			"node": map[string]any{
				"id": node.ID, "cluster": "app.ns1",
				"metadata": map[string]any{"NAMESPACE": "ns1", "GENERATOR": "grpc"},
			},
			"server_listener_resource_name_template": "xds.istio.io/grpc/lds/inbound/%s",
			"certificate_providers": map[string]any{"default": map[string]any{
				"plugin_name": "file_watcher",
				"config": map[string]any{
					"certificate_file": "/c/cert-chain.pem", "private_key_file": "/c/key.pem",
					"ca_certificate_file": "/c/root-cert.pem", "refresh_interval": "900s",
				},
			}},
		},
	}, {
		name: "loopback port, no certificates, locality, explicit generator and client template",
		opts: BootstrapOptions{
			ServerURI: "127.0.0.1:15010",
			Node: xds.Node{ID: "n", Metadata: map[string]string{"GENERATOR": "custom"},
				Locality: state.Locality{Region: "r", Zone: "z"}},
			ClientListenerTemplate: "%s",
		},
		want: map[string]any{
			"xds_servers": []any{map[string]any{
				"server_uri":      "127.0.0.1:15010",
				"channel_creds":   []any{map[string]any{"type": "insecure"}},
				"server_features": []any{"xds_v3"},
			}},
			"node": map[string]any{
				"id": "n", "metadata": map[string]any{"GENERATOR": "custom"},
				"locality": map[string]any{"region": "r", "zone": "z"},
			},
			"server_listener_resource_name_template":         "xds.istio.io/grpc/lds/inbound/%s",
			"client_default_listener_resource_name_template": "%s",
		},
	}, {
		name: "sub-second refresh",
		opts: BootstrapOptions{ServerURI: "x", Node: xds.Node{ID: "n"}, Certs: files, Refresh: 1500 * time.Millisecond},
	}, {
		name: "no server", opts: BootstrapOptions{Node: node}, err: true,
	}, {
		name: "no node id", opts: BootstrapOptions{ServerURI: "x"}, err: true,
	}, {
		name: "incomplete certificate files", opts: BootstrapOptions{ServerURI: "x", Node: node, Certs: &CertFiles{Cert: "c"}}, err: true,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "etc", "grpc-bootstrap.json")
			err := WriteBootstrap(path, tt.opts)
			if tt.err {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatalf("not JSON: %v\n%s", err, data)
			}
			if tt.name == "sub-second refresh" {
				cfg := got["certificate_providers"].(map[string]any)["default"].(map[string]any)["config"].(map[string]any)
				if cfg["refresh_interval"] != "1.5s" {
					t.Errorf("refresh_interval %v, want 1.5s", cfg["refresh_interval"])
				}
				return
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("bootstrap:\n%s\nwant %v", data, tt.want)
			}
			// No temporary file is left next to it.
			ents, _ := os.ReadDir(filepath.Dir(path))
			if len(ents) != 1 {
				t.Errorf("directory holds %d entries, want only the bootstrap", len(ents))
			}
		})
	}
}
