package integration

import (
	"fmt"
	"net"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/dns/ndspb"
)

const nameTableType = "type.googleapis.com/istio.networking.nds.v1.NameTable"

// ndsOnlyServer is an ADS server that, like istiod, sends a NameTable only
// to a node that sets DNS_CAPTURE, and answers no other type.
type ndsOnlyServer struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	table *ndspb.NameTable
}

func (s *ndsOnlyServer) StreamAggregatedResources(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	capture := false
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		if n := req.GetNode(); n != nil {
			capture = n.GetMetadata().GetFields()["DNS_CAPTURE"].GetStringValue() == "true"
		}
		if req.GetTypeUrl() != nameTableType || !capture || req.GetResponseNonce() != "" {
			continue
		}
		a, err := anypb.New(s.table)
		if err != nil {
			return err
		}
		if err := stream.Send(&discovery.DiscoveryResponse{TypeUrl: nameTableType, VersionInfo: "1", Nonce: "1", Resources: []*anypb.Any{a}}); err != nil {
			return err
		}
	}
}

// TestDNSProxyNDS: with ADS configured the binary subscribes to Istio's
// NameTable and answers its names in their Kubernetes forms.
func TestDNSProxyNDS(t *testing.T) {
	srv := &ndsOnlyServer{table: &ndspb.NameTable{Table: map[string]*ndspb.NameTable_NameInfo{
		"productpage.bookinfo.svc.cluster.local": {Ips: []string{"10.96.1.1", "fd00::101"}, Registry: "Kubernetes", Shortname: "productpage", Namespace: "bookinfo"},
		"db.example.com":                         {Ips: []string{"10.96.1.2"}, Registry: "External"},
	}}}
	gs := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	t.Cleanup(gs.Stop)

	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startProxy(t, nil, proxyOpts{
		noReadyWait: true, // the server sends no listeners or clusters
		bootstrapExtra: fmt.Sprintf(`dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services:
    - google_grpc: {target_uri: "%s", stat_prefix: ads}
  lds_config: {ads: {}, resource_api_version: V3}
  cds_config: {ads: {}, resource_api_version: V3}
`, ln.Addr()),
		args: []string{"--dns-proxy", dnsAddr, "--dns-resolv-conf", "/dev/null"},
		env:  []string{"POD_NAMESPACE=bookinfo"},
	})
	eventually(t, 10*time.Second, func() error {
		m, err := dnsQuery("udp", dnsAddr, "productpage.", dnsmessage.TypeA)
		if err != nil {
			return err
		}
		if len(m.Answers) != 1 {
			return fmt.Errorf("rcode %v, %d answers", m.Header.RCode, len(m.Answers))
		}
		return nil
	})
	for _, tc := range []struct {
		name  string
		typ   dnsmessage.Type
		count int
	}{
		{"productpage.bookinfo.svc.cluster.local.", dnsmessage.TypeAAAA, 1},
		{"productpage.bookinfo.", dnsmessage.TypeA, 1},
		{"db.example.com.", dnsmessage.TypeA, 1},
		{"db.example.com.", dnsmessage.TypeAAAA, 0},
	} {
		m, err := dnsQuery("tcp", dnsAddr, tc.name, tc.typ)
		if err != nil || m.Header.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != tc.count {
			t.Errorf("%s %v: %v, rcode %v, %d answers; want %d", tc.name, tc.typ, err, m.Header.RCode, len(m.Answers), tc.count)
		}
	}
}
