package dns

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/dns/ndspb"
)

// ndsServer is an ADS server that sends the NameTables pushed into it to
// nodes asking for them with DNS_CAPTURE set, and records the requests.
type ndsServer struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	push chan *discovery.DiscoveryResponse
	mu   sync.Mutex
	reqs []*discovery.DiscoveryRequest
}

func (s *ndsServer) StreamAggregatedResources(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			s.mu.Lock()
			s.reqs = append(s.reqs, req)
			s.mu.Unlock()
		}
	}()
	for {
		select {
		case err := <-errc:
			return err
		case r := <-s.push:
			if err := stream.Send(r); err != nil {
				return err
			}
		}
	}
}

func (s *ndsServer) requests() []*discovery.DiscoveryRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*discovery.DiscoveryRequest(nil), s.reqs...)
}

func nameTableResponse(t *testing.T, version string, tables ...*ndspb.NameTable) *discovery.DiscoveryResponse {
	t.Helper()
	r := &discovery.DiscoveryResponse{TypeUrl: TypeNameTable, VersionInfo: version, Nonce: "n" + version}
	for _, nt := range tables {
		a, err := anypb.New(nt)
		if err != nil {
			t.Fatal(err)
		}
		r.Resources = append(r.Resources, a)
	}
	return r
}

// TestRunNDS: a NameTable pushed over ADS lands in the table and is ACKed
// with its version and nonce; a bad resource is NACKed and the table keeps
// the last good one; the request carries DNS_CAPTURE.
func TestRunNDS(t *testing.T) {
	srv := &ndsServer{push: make(chan *discovery.DiscoveryResponse, 4)}
	gs := grpc.NewServer()
	discovery.RegisterAggregatedDiscoveryServiceServer(gs, srv)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(ln) }()
	defer gs.Stop()

	tab := NewTable(TableConfig{Namespace: "ns"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- RunNDS(ctx, NDSConfig{Address: ln.Addr().String(), Node: &core.Node{Id: "sidecar~1.2.3.4~a.ns~ns.svc.cluster.local"}, Table: tab})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	srv.push <- nameTableResponse(t, "1", &ndspb.NameTable{Table: map[string]*ndspb.NameTable_NameInfo{
		"db.ns.svc.cluster.local": {Ips: []string{"10.4.0.1"}, Registry: "Kubernetes", Shortname: "db", Namespace: "ns"},
	}})
	waitFor(t, func() bool { _, v := tab.cur.Load().lookup("db."); return v == found })
	waitFor(t, func() bool {
		r := srv.requests()
		return len(r) >= 2 && r[1].GetVersionInfo() == "1" && r[1].GetResponseNonce() == "n1"
	})

	bad := nameTableResponse(t, "2")
	bad.Resources = append(bad.Resources, &anypb.Any{TypeUrl: TypeNameTable, Value: []byte{0xff, 0xff}})
	srv.push <- bad
	waitFor(t, func() bool { r := srv.requests(); return len(r) >= 3 && r[2].GetErrorDetail() != nil })
	r := srv.requests()
	if r[2].GetVersionInfo() != "1" || r[2].GetResponseNonce() != "n2" {
		t.Errorf("NACK: version %q nonce %q", r[2].GetVersionInfo(), r[2].GetResponseNonce())
	}
	if _, v := tab.cur.Load().lookup("db.ns.svc."); v != found {
		t.Error("NACKed update dropped the last good table")
	}
	first := r[0]
	if first.GetTypeUrl() != TypeNameTable || first.GetNode().GetMetadata().GetFields()["DNS_CAPTURE"].GetStringValue() != "true" {
		t.Errorf("first request: %v", first)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for range 200 {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not met within 2s")
}
