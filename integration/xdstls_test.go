package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// TestXDSOverTLSWithToken: the proxy reaches a control plane shaped like
// istiod on 15012: TLS with a certificate for istiod.istio-system.svc from
// the mesh root, and a bearer token required on the ADS stream. With the
// root, server name and token file it is configured and serves; with a
// wrong token it never becomes ready and says why.
func TestXDSOverTLSWithToken(t *testing.T) {
	root, rootKey, rootPEM := testRoot(t, "mesh root")
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(9), Subject: pkix.Name{CommonName: "istiod"},
		DNSNames:  []string{"istiod.istio-system.svc"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}, root, &key.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	const token = "projected-sa-token"
	auth := func(ctx context.Context) error {
		md, _ := metadata.FromIncomingContext(ctx)
		if v := md.Get("authorization"); len(v) != 1 || v[0] != "Bearer "+token {
			return status.Error(codes.Unauthenticated, "missing or wrong bearer token")
		}
		return nil
	}
	cp := startControlPlaneWith(t,
		grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := auth(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}))
	be := startBackend(t, "v1")
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cp.set(httpListener(t, "http", addr, "local"), routeConfig("local", routeTo("v1")),
		edsCluster("v1", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "v1", be.addr))

	dir := t.TempDir()
	rootFile, tokenFile, badToken := filepath.Join(dir, "root-cert.pem"), filepath.Join(dir, "istio-token"), filepath.Join(dir, "bad-token")
	for f, b := range map[string]string{rootFile: string(rootPEM), tokenFile: token + "\n", badToken: "nope"} {
		if err := os.WriteFile(f, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tlsArgs := []string{"--xds-root-file", rootFile, "--xds-server-name", "istiod.istio-system.svc"}

	startZtunnel(t, cp, proxyOpts{}, append(tlsArgs, "--xds-token-file", tokenFile)...)
	eventually(t, 10*time.Second, func() error {
		code, be, _, err := get(h1Client(), "http://"+addr+"/", nil)
		if err != nil || code != 200 || be != "v1" {
			return fmt.Errorf("GET: %d %q %v", code, be, err)
		}
		return nil
	})

	bad := startZtunnel(t, cp, proxyOpts{noReadyWait: true}, append(tlsArgs, "--xds-token-file", badToken)...)
	eventually(t, 10*time.Second, func() error {
		if out := bad.out.String(); !strings.Contains(out, "bearer token") {
			return fmt.Errorf("no Unauthenticated error in the log yet")
		}
		return nil
	})
	if code, _ := adminDo(t, bad, "GET", "/ready"); code == 200 {
		t.Error("proxy with a rejected token reports ready")
	}
	// Plaintext to a TLS control plane fails too (no silent downgrade).
	plain := startZtunnel(t, cp, proxyOpts{noReadyWait: true})
	time.Sleep(500 * time.Millisecond)
	if code, _ := adminDo(t, plain, "GET", "/ready"); code == 200 {
		t.Error("plaintext proxy reports ready against a TLS control plane")
	}
}
