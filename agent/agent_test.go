package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// testPKI is a root that signs an istiod-like serving certificate (IP SAN)
// and SPIFFE workload certificates.
type testPKI struct {
	root    *x509.Certificate
	rootKey *ecdsa.PrivateKey
	pool    *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test root"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(root)
	return &testPKI{root: root, rootKey: key, pool: pool}
}

func (p *testPKI) issue(t *testing.T, tmpl *x509.Certificate) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl.SerialNumber = sn
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.root, &key.PublicKey, p.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// Upstream mTLS: the agent verifies the control plane against the
// workload trust bundle and presents the workload certificate, which the
// control plane sees; with roots that do not verify the control plane the
// application's stream stays open and receives nothing.
func TestAgentUpstreamMTLS(t *testing.T) {
	pki := newTestPKI(t)
	serving := pki.issue(t, &x509.Certificate{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	spiffe, _ := url.Parse("spiffe://cluster.local/ns/ns1/sa/app")

	var mu sync.Mutex
	var peers []string
	c := cache.NewSnapshotCache(false, cache.IDHash{}, nil)
	snap, _ := cache.NewSnapshot("v1", listeners("l1"))
	if err := c.SetSnapshot(context.Background(), "node-1", snap); err != nil {
		t.Fatal(err)
	}
	cb := server.CallbackFuncs{StreamOpenFunc: func(ctx context.Context, _ int64, _ string) error {
		if p, ok := peer.FromContext(ctx); ok {
			if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 && len(ti.State.PeerCertificates[0].URIs) > 0 {
				mu.Lock()
				peers = append(peers, ti.State.PeerCertificates[0].URIs[0].String())
				mu.Unlock()
			}
		}
		return nil
	}}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{*serving}, ClientCAs: pki.pool, ClientAuth: tls.RequireAndVerifyClientCert,
	})))
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, server.NewServer(context.Background(), c, cb))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	tests := []struct {
		name    string
		tls     *UpstreamTLS
		receive bool
	}{
		{"mesh bundle, workload certificate", &UpstreamTLS{ClientCert: true}, true},
		{"roots that do not verify the control plane", &UpstreamTLS{ClientCert: true, Roots: newTestPKI(t).pool}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			files := CertFiles{Cert: filepath.Join(dir, "c.pem"), Key: filepath.Join(dir, "k.pem"), Root: filepath.Join(dir, "r.pem")}
			a, err := Start(context.Background(), Config{
				BootstrapPath: filepath.Join(dir, "bootstrap.json"),
				Listen:        "127.0.0.1:0", Upstream: lis.Addr().String(), UpstreamTLS: tt.tls,
				Node:      NodeFromEnv(func(string) string { return "" }, ""),
				CertFiles: &files,
				Fetch: func(context.Context) (*tls.Certificate, *x509.CertPool, error) {
					return pki.issue(t, &x509.Certificate{URIs: []*url.URL{spiffe}}), pki.pool, nil
				},
				Backoff: Backoff{Base: 20 * time.Millisecond, Max: 100 * time.Millisecond},
				Log:     slog.New(slog.DiscardHandler),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			// The bootstrap names the proxy's address and the files.
			var b bootstrapJSON
			data, _ := os.ReadFile(filepath.Join(dir, "bootstrap.json"))
			if err := json.Unmarshal(data, &b); err != nil || b.XDSServers[0].ServerURI != a.Proxy.ServerURI() ||
				b.CertificateProviders["default"].Config.CertificateFile != files.Cert {
				t.Fatalf("bootstrap (%v):\n%s", err, data)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			st, err := dialProxy(t, a.Proxy).StreamAggregatedResources(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := st.Send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: "node-1"}, TypeUrl: resource.ListenerType}); err != nil {
				t.Fatal(err)
			}
			if !tt.receive {
				got := make(chan struct{})
				go func() {
					if _, err := st.Recv(); err == nil {
						close(got)
					}
				}()
				select {
				case <-got:
					t.Fatal("a response arrived through an unverified control plane")
				case <-time.After(500 * time.Millisecond):
				}
				if a.Proxy.AppStreams() != 1 {
					t.Errorf("application stream closed while the upstream fails")
				}
				return
			}
			if r := recvTimeout(t, st.Recv, 5*time.Second); r.GetVersionInfo() != "v1" {
				t.Fatalf("version %q, want v1", r.GetVersionInfo())
			}
			mu.Lock()
			defer mu.Unlock()
			if len(peers) != 1 || peers[0] != spiffe.String() {
				t.Errorf("control plane saw client certificates %q, want [%s]", peers, spiffe)
			}
		})
	}
}
