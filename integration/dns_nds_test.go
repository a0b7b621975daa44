package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"golang.org/x/net/dns/dnsmessage"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/dns/ndspb"
)

const (
	nameTableType = "type.googleapis.com/istio.networking.nds.v1.NameTable"
	listenerType  = "type.googleapis.com/envoy.config.listener.v3.Listener"
	clusterType   = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
)

// ndsServer is an ADS server (SotW and delta) shaped like istiod for NDS:
// it sends the NameTable only on a stream whose node sets DNS_CAPTURE, and
// empty listener and cluster sets so the proxy becomes ready. It counts the
// streams opened and records which types were requested, and which
// NameTable responses were ACKed, on them.
type ndsServer struct {
	discovery.UnimplementedAggregatedDiscoveryServiceServer
	table *ndspb.NameTable

	mu      sync.Mutex
	streams int
	types   map[string]bool // type URLs requested, over all streams
	acked   bool            // a NameTable response was ACKed
	nacked  string
}

func (s *ndsServer) open() {
	s.mu.Lock()
	s.streams++
	s.mu.Unlock()
}

// note records a request: its type and, for a NameTable answer (one with
// a nonce), whether it ACKs or NACKs.
func (s *ndsServer) note(typeURL, nonce, nack string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.types == nil {
		s.types = map[string]bool{}
	}
	s.types[typeURL] = true
	if typeURL == nameTableType && nonce != "" {
		if nack != "" {
			s.nacked = nack
		} else {
			s.acked = true
		}
	}
}

func (s *ndsServer) snapshot() (streams int, types []string, acked bool, nacked string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for t := range s.types {
		types = append(types, t)
	}
	slices.Sort(types)
	return s.streams, types, s.acked, s.nacked
}

// response is what the server sends for the first request of a type, nil
// for none.
func (s *ndsServer) response(typeURL string, capture bool) []*anypb.Any {
	switch typeURL {
	case listenerType, clusterType:
		return []*anypb.Any{}
	case nameTableType:
		if !capture {
			return nil
		}
		a, err := anypb.New(s.table)
		if err != nil {
			panic(err)
		}
		return []*anypb.Any{a}
	}
	return nil
}

func (s *ndsServer) StreamAggregatedResources(stream discovery.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	s.open()
	capture := false
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		if n := req.GetNode(); n != nil {
			capture = n.GetMetadata().GetFields()["DNS_CAPTURE"].GetStringValue() == "true"
		}
		s.note(req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage())
		if req.GetResponseNonce() != "" {
			continue
		}
		res := s.response(req.GetTypeUrl(), capture)
		if res == nil {
			continue
		}
		if err := stream.Send(&discovery.DiscoveryResponse{TypeUrl: req.GetTypeUrl(), VersionInfo: "1", Nonce: "1", Resources: res}); err != nil {
			return err
		}
	}
}

func (s *ndsServer) DeltaAggregatedResources(stream discovery.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	s.open()
	capture := false
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		if n := req.GetNode(); n != nil {
			capture = n.GetMetadata().GetFields()["DNS_CAPTURE"].GetStringValue() == "true"
		}
		s.note(req.GetTypeUrl(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage())
		if req.GetResponseNonce() != "" {
			continue
		}
		res := s.response(req.GetTypeUrl(), capture)
		if res == nil {
			continue
		}
		resp := &discovery.DeltaDiscoveryResponse{TypeUrl: req.GetTypeUrl(), SystemVersionInfo: "1", Nonce: "1"}
		for _, a := range res {
			// istiod names no NameTable; the client keys it by position.
			resp.Resources = append(resp.Resources, &discovery.Resource{Version: "1", Resource: a})
		}
		if err := stream.Send(resp); err != nil {
			return err
		}
	}
}

// TestDNSProxyNDS: with ADS configured the binary subscribes to Istio's
// NameTable on its one ADS stream, beside listeners and clusters (with
// DNS_CAPTURE in the node), ACKs it and answers its names in their
// Kubernetes forms; over TLS with a bearer token (istiod on 15012) the
// NameTable arrives the same way, since it shares the stream.
func TestDNSProxyNDS(t *testing.T) {
	cases := []struct {
		name  string
		delta bool
		tls   bool
	}{
		{"sotw", false, false},
		{"delta", true, false},
		{"tls+token", false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := &ndsServer{table: &ndspb.NameTable{Table: map[string]*ndspb.NameTable_NameInfo{
				"productpage.bookinfo.svc.cluster.local": {Ips: []string{"10.96.1.1", "fd00::101"}, Registry: "Kubernetes", Shortname: "productpage", Namespace: "bookinfo"},
				"db.example.com":                         {Ips: []string{"10.96.1.2"}, Registry: "External"},
			}}}
			var opts []grpc.ServerOption
			args := []string{"--dns-proxy", "", "--dns-resolv-conf", "/dev/null"}
			if tc.delta {
				args = append(args, "--delta")
			}
			if tc.tls {
				var tlsArgs []string
				opts, tlsArgs = istiodLikeTLS(t)
				args = append(args, tlsArgs...)
			}
			gs := grpc.NewServer(opts...)
			discovery.RegisterAggregatedDiscoveryServiceServer(gs, srv)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = gs.Serve(ln) }()
			t.Cleanup(gs.Stop)

			dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			args[1] = dnsAddr
			startProxy(t, nil, proxyOpts{
				bootstrapExtra: fmt.Sprintf(`dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services:
    - google_grpc: {target_uri: "%s", stat_prefix: ads}
  lds_config: {ads: {}, resource_api_version: V3}
  cds_config: {ads: {}, resource_api_version: V3}
`, ln.Addr()),
				args: args,
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
			for _, q := range []struct {
				name  string
				typ   dnsmessage.Type
				count int
			}{
				{"productpage.bookinfo.svc.cluster.local.", dnsmessage.TypeAAAA, 1},
				{"productpage.bookinfo.", dnsmessage.TypeA, 1},
				{"db.example.com.", dnsmessage.TypeA, 1},
				{"db.example.com.", dnsmessage.TypeAAAA, 0},
			} {
				m, err := dnsQuery("tcp", dnsAddr, q.name, q.typ)
				if err != nil || m.Header.RCode != dnsmessage.RCodeSuccess || len(m.Answers) != q.count {
					t.Errorf("%s %v: %v, rcode %v, %d answers; want %d", q.name, q.typ, err, m.Header.RCode, len(m.Answers), q.count)
				}
			}
			eventually(t, 5*time.Second, func() error {
				if _, _, acked, _ := srv.snapshot(); !acked {
					return fmt.Errorf("NameTable not ACKed yet")
				}
				return nil
			})
			streams, types, _, nacked := srv.snapshot()
			if streams != 1 {
				t.Errorf("control plane saw %d ADS streams, want 1 (NDS on the main stream)", streams)
			}
			if want := []string{clusterType, listenerType, nameTableType}; !slices.Equal(types, want) {
				t.Errorf("types requested = %v, want %v", types, want)
			}
			if nacked != "" {
				t.Errorf("NameTable NACKed: %s", nacked)
			}
		})
	}
}

// istiodLikeTLS returns server options for a control plane like istiod on
// 15012 (TLS with a certificate for istiod.istio-system.svc from a mesh
// root; a bearer token required on every stream) and the proxy flags that
// reach it.
func istiodLikeTLS(t *testing.T) ([]grpc.ServerOption, []string) {
	t.Helper()
	root, rootKey, rootPEM := testRoot(t, "mesh root")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(11), Subject: pkix.Name{CommonName: "istiod"},
		DNSNames:  []string{"istiod.istio-system.svc"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, root, &key.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	const token = "nds-sa-token"
	dir := t.TempDir()
	rootFile, tokenFile := filepath.Join(dir, "root-cert.pem"), filepath.Join(dir, "istio-token")
	if err := os.WriteFile(rootFile, rootPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	opts := []grpc.ServerOption{
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			md, _ := metadata.FromIncomingContext(ss.Context())
			if v := md.Get("authorization"); len(v) != 1 || v[0] != "Bearer "+token {
				return status.Error(codes.Unauthenticated, "missing or wrong bearer token")
			}
			return h(srv, ss)
		}),
	}
	return opts, []string{"--xds-root-file", rootFile, "--xds-server-name", "istiod.istio-system.svc", "--xds-token-file", tokenFile}
}
