package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

func TestLoadYAML(t *testing.T) {
	b, err := Load("testdata/good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if b.Path != "testdata/good.yaml" || b.Node.ID != "sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local" || b.Node.Cluster != "app" {
		t.Errorf("node %+v", b.Node)
	}
	if b.Node.Locality != (state.Locality{Region: "r1", Zone: "z1", SubZone: "s1"}) {
		t.Errorf("locality %+v", b.Node.Locality)
	}
	wantMD := map[string]string{"NAMESPACE": "ns", "LABELS": `{"app":"web"}`, "REPLICAS": "3"}
	if !reflect.DeepEqual(b.Node.Metadata, wantMD) {
		t.Errorf("metadata %v", b.Node.Metadata)
	}
	if b.AdminAddress != "127.0.0.1:15000" {
		t.Errorf("admin %q", b.AdminAddress)
	}
	if b.ADS == nil || *b.ADS != (ADSConfig{Address: "istiod.istio-system.svc:15010", Delta: true}) {
		t.Errorf("ADS %+v", b.ADS)
	}
	if !b.LDSFromADS || !b.CDSFromADS {
		t.Errorf("LDS %v CDS %v", b.LDSFromADS, b.CDSFromADS)
	}
	if len(b.Clusters) != 2 || len(b.Listeners) != 2 {
		t.Fatalf("%d clusters, %d listeners", len(b.Clusters), len(b.Listeners))
	}
	xds, backend := b.Clusters[0], b.Clusters[1]
	if !xds.Static || xds.Type != state.ClusterStrictDNS || xds.Protocol != state.UpstreamHTTP2 || xds.ConnectTimeout != time.Second {
		t.Errorf("xds cluster %+v", xds)
	}
	if backend.LBPolicy != state.LBLeastRequest || backend.LoadAssignment.Localities[0].Endpoints[0].Address != "127.0.0.1:8080" {
		t.Errorf("backend cluster %+v", backend)
	}
	http := b.Listeners[0]
	if !http.Static || http.Name != "http" || http.Address.String() != "0.0.0.0:15007" {
		t.Errorf("listener %+v", http)
	}
	hcm := http.FilterChains[0].HTTP
	if hcm == nil || hcm.RouteConfig == nil || hcm.RouteConfig.VirtualHosts[0].Routes[0].Action.Timeout != 3*time.Second ||
		!reflect.DeepEqual(hcm.HTTPFilters, []string{"envoy.filters.http.fault", "envoy.filters.http.router"}) {
		t.Errorf("hcm %+v", hcm)
	}
	if tp := b.Listeners[1].FilterChains[0].TCPProxy; tp == nil || tp.Cluster != "backend" {
		t.Errorf("tcp proxy %+v", tp)
	}
}

func TestLoadJSON(t *testing.T) {
	b, err := Load("testdata/good.json")
	if err != nil {
		t.Fatal(err)
	}
	if b.ADS == nil || *b.ADS != (ADSConfig{Address: "xds.example:15010"}) || b.LDSFromADS || !b.CDSFromADS {
		t.Errorf("ADS %+v LDS %v CDS %v", b.ADS, b.LDSFromADS, b.CDSFromADS)
	}
	if b.AdminAddress != "" || len(b.Listeners) != 0 {
		t.Errorf("admin %q listeners %d", b.AdminAddress, len(b.Listeners))
	}
	c := b.Clusters[0]
	if c.ConnectTimeout != 250*time.Millisecond || c.LoadAssignment.Localities[0].Endpoints[0].Address != "[::1]:9000" {
		t.Errorf("cluster %+v", c)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name, file, content string
		want                []string
	}{
		{"unknown field", "b.yaml", "static_resources:\n  clusters:\n  - name: a\n    bogus: 1\n",
			[]string{"config: ", "b.yaml: static_resources.clusters[0].bogus: unknown field"}},
		{"bad enum", "b.yaml", "static_resources:\n  clusters:\n  - name: a\n    lb_policy: FASTEST\n",
			[]string{"b.yaml: static_resources.clusters[0].lb_policy:", "FASTEST"}},
		{"bad duration", "b.yaml", "static_resources:\n  clusters:\n  - name: a\n  - name: b\n    connect_timeout: 5 seconds\n",
			[]string{"b.yaml: static_resources.clusters[1].connect_timeout:", "Duration"}},
		{"bad duration json", "b.json", "{\n \"static_resources\": {\"clusters\": [{\"name\": \"a\",\n \"connectTimeout\": \"x\"}]}}",
			[]string{"b.json: static_resources.clusters[0].connectTimeout:"}},
		{"invalid listener", "b.yaml", `
static_resources:
  listeners:
  - name: in
    address: {socket_address: {address: 127.0.0.1, port_value: 1}}
    filter_chains:
    - filters:
      - name: t
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: x
`, []string{`b.yaml: static_resources.listeners[0]: listener "in": filter_chains[0].filters[0].typed_config: tcp_proxy: cluster_specifier is required`}},
		{"unknown Any type", "b.yaml", `
static_resources:
  listeners:
  - name: in
    filter_chains:
    - filters:
      - name: t
        typed_config:
          "@type": type.googleapis.com/not.a.Type
`, []string{"b.yaml: static_resources.listeners[0].filter_chains[0].filters[0].typed_config"}},
		{"rest api", "b.yaml", "dynamic_resources:\n  ads_config:\n    api_type: REST\n",
			[]string{"b.yaml: dynamic_resources.ads_config.api_type: REST is not supported"}},
		{"ads cluster missing", "b.yaml", "dynamic_resources:\n  ads_config:\n    api_type: GRPC\n    grpc_services: [{envoy_grpc: {cluster_name: xds}}]\n",
			[]string{`grpc_services[0].envoy_grpc.cluster_name: no static cluster named "xds"`}},
		{"lds from path", "b.yaml", "dynamic_resources:\n  lds_config: {path_config_source: {path: /x}}\n",
			[]string{"dynamic_resources.lds_config: only `ads: {}` is supported"}},
		{"duplicate cluster", "b.yaml", "static_resources:\n  clusters: [{name: a}, {name: a}]\n",
			[]string{`static_resources.clusters[1]: duplicate cluster name "a"`}},
		{"bad yaml", "b.yaml", "a: [\n", []string{"config: ", "b.yaml: "}},
	}
	dir := t.TempDir()
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.file)
			if err := os.WriteFile(p, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Load(p)
			if err == nil {
				t.Fatalf("no error, want %q", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

func TestJSONPathAt(t *testing.T) {
	data := []byte(`{"a":{"b":[1,{"c":"x"}],"d":true}}`)
	tests := []struct {
		find, want string
	}{
		{`"a"`, "a"},
		{`"b"`, "a.b"},
		{`1`, "a.b[0]"},
		{`"c"`, "a.b[1].c"},
		{`"x"`, "a.b[1].c"},
		{`"d"`, "a.d"},
		{`true`, "a.d"},
	}
	for _, tc := range tests {
		off := strings.Index(string(data), tc.find)
		if got := jsonPathAt(data, off); got != tc.want {
			t.Errorf("jsonPathAt(%s) = %q, want %q", tc.find, got, tc.want)
		}
	}
}
