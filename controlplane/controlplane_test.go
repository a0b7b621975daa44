package controlplane

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshlet/meshlet/examples/demo"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// quiet drops the server's logs; tests assert on LastError instead.
var quiet = slog.New(slog.DiscardHandler)

const (
	typeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	typeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	typeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// staticCluster is a minimal self-contained resource file.
func staticCluster(name, timeout string) string {
	return `resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: ` + name + `
  type: STATIC
  connect_timeout: ` + timeout + `
  load_assignment:
    cluster_name: ` + name + `
    endpoints:
    - lb_endpoints:
      - endpoint:
          address:
            socket_address: {address: 127.0.0.1, port_value: ${PORT}}
`
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func start(t *testing.T, dir string, vars map[string]string) (*Server, string) {
	t.Helper()
	s, err := New(dir, vars, quiet)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	addr, err := s.Start("")
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(s.Stop)
	return s, addr.String()
}

// adsClient is a state-of-the-world ADS client that ACKs what it gets.
type adsClient struct {
	t      *testing.T
	stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesClient
}

func dialADS(t *testing.T, addr string) *adsClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(func() { cancel(); conn.Close() })
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return &adsClient{t: t, stream: stream}
}

var testNode = &core.Node{Id: "sidecar~127.0.0.1~test.default~default.svc.cluster.local"}

// request subscribes to (or ACKs) typeURL and returns the next response.
func (c *adsClient) request(typeURL, version, nonce string, names ...string) *discovery.DiscoveryResponse {
	c.t.Helper()
	err := c.stream.Send(&discovery.DiscoveryRequest{
		Node: testNode, TypeUrl: typeURL, VersionInfo: version, ResponseNonce: nonce, ResourceNames: names,
	})
	if err != nil {
		c.t.Fatalf("send: %v", err)
	}
	resp, err := c.stream.Recv()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	return resp
}

func names(t *testing.T, resp *discovery.DiscoveryResponse) []string {
	t.Helper()
	var out []string
	for _, a := range resp.GetResources() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, nameOf(m.(types.Resource)))
	}
	sort.Strings(out)
	return out
}

func nameOf(r types.Resource) string {
	type named interface{ GetName() string }
	type clusterNamed interface{ GetClusterName() string }
	if n, ok := r.(named); ok && n.GetName() != "" {
		return n.GetName()
	}
	return r.(clusterNamed).GetClusterName()
}

// demoDir copies the embedded demo resources into a temp dir.
func demoDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ents, err := demo.Files.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := demo.Files.ReadFile(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, e.Name()), string(b))
	}
	return dir
}

var demoVars = map[string]string{
	"LISTENER_PORT": "15001", "ECHO_V1_HTTP_PORT": "1001", "ECHO_V2_HTTP_PORT": "1002",
	"ECHO_V1_GRPC_PORT": "1003", "ECHO_V2_GRPC_PORT": "1004",
}

func TestADSServesDemoResources(t *testing.T) {
	_, addr := start(t, demoDir(t), demoVars)
	c := dialADS(t, addr)

	cds := c.request(typeCluster, "", "")
	if got, want := strings.Join(names(t, cds), ","), "echo-v1,echo-v2,grpc-v1,grpc-v2"; got != want {
		t.Fatalf("clusters = %s, want %s", got, want)
	}
	lds := c.request(typeListener, "", "")
	if got := strings.Join(names(t, lds), ","); got != "demo" {
		t.Fatalf("listeners = %s, want demo", got)
	}
	rds := c.request(typeRoute, "", "", "demo")
	if got := strings.Join(names(t, rds), ","); got != "demo" {
		t.Fatalf("routes = %s, want demo", got)
	}
	// In ADS mode go-control-plane answers only a request naming every
	// resource of the type, as Envoy does.
	eds := c.request(typeEndpoint, "", "", "echo-v1", "echo-v2", "grpc-v1", "grpc-v2")
	if len(eds.GetResources()) != 4 {
		t.Fatalf("endpoints: got %d resources, want 4", len(eds.GetResources()))
	}
	var m proto.Message
	for _, a := range eds.GetResources() {
		m, _ = a.UnmarshalNew()
		if nameOf(m.(types.Resource)) == "echo-v1" {
			break
		}
	}
	if s := m.(interface{ String() string }).String(); !strings.Contains(s, "port_value:1001") {
		t.Errorf("echo-v1 endpoint does not carry the substituted port: %s", s)
	}
}

func TestDeltaADSServesResources(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "c.yaml"), staticCluster("one", "1s"))
	_, addr := start(t, dir, map[string]string{"PORT": "80"})

	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discovery.DeltaDiscoveryRequest{Node: testNode, TypeUrl: typeCluster}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetResources()) != 1 || resp.GetResources()[0].GetName() != "one" {
		t.Fatalf("delta resources = %v, want cluster one", resp.GetResources())
	}
}

func TestReloadOnFileChange(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	writeFile(t, file, staticCluster("one", "1s"))
	s, addr := start(t, dir, map[string]string{"PORT": "80"})
	c := dialADS(t, addr)

	first := c.request(typeCluster, "", "")
	if got := strings.Join(names(t, first), ","); got != "one" {
		t.Fatalf("clusters = %s, want one", got)
	}

	writeFile(t, file, staticCluster("two", "3s"))
	// The ACK of the first response is answered once the new snapshot is
	// published (the cache holds the watch open until then).
	second := c.request(typeCluster, first.GetVersionInfo(), first.GetNonce())
	if got := strings.Join(names(t, second), ","); got != "two" {
		t.Fatalf("after rewrite clusters = %s, want two", got)
	}
	if second.GetVersionInfo() == first.GetVersionInfo() {
		t.Errorf("version did not change: %s", second.GetVersionInfo())
	}
	if s.Version() != second.GetVersionInfo() {
		t.Errorf("Version() = %s, want %s", s.Version(), second.GetVersionInfo())
	}
}

func TestBrokenFileKeepsLastSnapshot(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "a.yaml")
	writeFile(t, good, staticCluster("one", "1s"))
	s, addr := start(t, dir, map[string]string{"PORT": "80"})
	before := s.Version()

	broken := filepath.Join(dir, "b.yaml")
	writeFile(t, broken, "resources:\n- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n  name: x\n  connect_timeout: soon\n")
	deadline := time.Now().Add(5 * time.Second)
	for s.LastError() == nil && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	err := s.LastError()
	if err == nil {
		t.Fatal("broken file was not reported")
	}
	if !strings.Contains(err.Error(), "b.yaml") || !strings.Contains(err.Error(), "resources[0]") {
		t.Errorf("error %q does not name the file and resource", err)
	}
	if s.Version() != before {
		t.Errorf("version moved from %s to %s on a broken file", before, s.Version())
	}
	c := dialADS(t, addr)
	if got := strings.Join(names(t, c.request(typeCluster, "", "")), ","); got != "one" {
		t.Fatalf("served clusters = %s, want the last good (one)", got)
	}

	// Fixing the file publishes again.
	writeFile(t, broken, staticCluster("two", "2s"))
	deadline = time.Now().Add(5 * time.Second)
	for s.Version() == before && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if s.Version() == before || s.LastError() != nil {
		t.Fatalf("fixed file not published: version %s, err %v", s.Version(), s.LastError())
	}
}

func TestSetResourcesPushes(t *testing.T) {
	s, addr := start(t, "", nil)
	c := dialADS(t, addr)
	first := c.request(typeCluster, "", "")
	if len(first.GetResources()) != 0 {
		t.Fatalf("empty server sent %d clusters", len(first.GetResources()))
	}
	err := s.SetResources(&cluster.Cluster{
		Name:                 "pushed",
		ConnectTimeout:       durationpb.New(time.Second),
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_STATIC},
	})
	if err != nil {
		t.Fatal(err)
	}
	second := c.request(typeCluster, first.GetVersionInfo(), first.GetNonce())
	if got := strings.Join(names(t, second), ","); got != "pushed" {
		t.Fatalf("clusters = %s, want pushed", got)
	}
	if got := len(s.Resources()[typeCluster]); got != 1 {
		t.Errorf("Resources() has %d clusters, want 1", got)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		files   map[string]string
		wantErr []string
	}{
		{"undefined placeholder", map[string]string{"a.yaml": staticCluster("c", "1s")}, []string{"a.yaml", "PORT"}},
		{"unknown type", map[string]string{"a.yaml": "resources:\n- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Nope\n  name: x\n"}, []string{"a.yaml", "resources[0]"}},
		{"unknown field", map[string]string{"a.yaml": "resources:\n- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n  nam: x\n"}, []string{"a.yaml", "resources[0]", "nam"}},
		{"no name", map[string]string{"a.yaml": "resources:\n- \"@type\": type.googleapis.com/envoy.config.cluster.v3.Cluster\n  type: STATIC\n"}, []string{"a.yaml", "no name"}},
		{"wrong top level", map[string]string{"a.yaml": "clusters: []\n"}, []string{"a.yaml", "resources:"}},
		{"duplicate", map[string]string{
			"a.yaml": staticCluster("c", "1s"), "b.yaml": staticCluster("c", "2s"),
		}, []string{"b.yaml", `Cluster "c" already defined in`, "a.yaml"}},
		{"dangling rds", map[string]string{"a.yaml": "resources:\n- \"@type\": type.googleapis.com/envoy.config.route.v3.RouteConfiguration\n  name: r\n"}, []string{"not consistent"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for n, c := range tt.files {
				writeFile(t, filepath.Join(dir, n), c)
			}
			vars := map[string]string{}
			if tt.name != "undefined placeholder" {
				vars["PORT"] = "80"
			}
			_, err := New(dir, vars, quiet)
			if err == nil {
				t.Fatal("New succeeded, want error")
			}
			for _, w := range tt.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
