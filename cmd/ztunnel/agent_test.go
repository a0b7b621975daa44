package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/meshlet/meshlet/identity"
)

func TestAgentCmd(t *testing.T) {
	dir := t.TempDir()
	common := []string{"agent", "--xds-listen", "127.0.0.1:0", "--bootstrap-out", filepath.Join(dir, "b.json")}
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string // in stderr
	}{
		{"no control plane address", []string{"agent"}, exitUsage, "--xds-address"},
		{"arguments without --", append(common, "--xds-address", "127.0.0.1:1", "true"), exitUsage, "put the application after --"},
		{"refresh longer than the renewal margin", append(common, "--xds-address", "127.0.0.1:1", "--ca-dir", filepath.Join(dir, "ca"),
			"--cert-lifetime", "1m", "--cert-refresh", "40s"), exitUsage, "--cert-refresh 40s must be shorter than the 30s"},
		{"incomplete file source", append(common, "--xds-address", "127.0.0.1:1", "--cert-file", "c.pem"), exitUsage, "go together"},
		{"file source: the bootstrap names the files as absolute paths", append(common, "--xds-address", "127.0.0.1:1",
			"--cert-file", "c.pem", "--key-file", "k.pem", "--roots-file", "r.pem",
			"--", "sh", "-c", `grep -q '"certificate_file": "/.*/c.pem"' "$GRPC_XDS_BOOTSTRAP"`), exitOK, ""},
		{"application exit code", append(common, "--xds-address", "127.0.0.1:1", "--", "sh", "-c", "exit 3"), 3, ""},
		{"application killed by a signal", append(common, "--xds-address", "127.0.0.1:1", "--", "sh", "-c", "kill -TERM $$"), exitSignalBase + 15, ""},
		{"application not found", append(common, "--xds-address", "127.0.0.1:1", "--", filepath.Join(dir, "missing")), exitAppNotFound, "starting"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runBinary(t, 20*time.Second, []string{"XDS_ADDRESS=", "OUTPUT_CERTS="}, tt.args...)
			if code != tt.wantCode {
				t.Errorf("exit code %d, want %d\n%s", code, tt.wantCode, stderr)
			}
			if tt.wantErr != "" && !strings.Contains(stderr, tt.wantErr) {
				t.Errorf("stderr lacks %q:\n%s", tt.wantErr, stderr)
			}
		})
	}
}

// With --ca-address the agent asks the Istio CA API (here the in-process
// CAServer) with the token file, and the files it writes carry the
// workload's SPIFFE ID and verify against the CA's root.
func TestAgentIstioCA(t *testing.T) {
	ca, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	want := identity.ID{TrustDomain: "cluster.local", Namespace: "ns1", ServiceAccount: "app"}
	srv := &identity.CAServer{CA: ca, Authenticate: func(_ context.Context, tok string) (identity.ID, error) {
		if tok != "tok-app" {
			return identity.ID{}, errors.New("unknown token")
		}
		return want, nil
	}}
	gs := grpc.NewServer()
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	tests := []struct {
		name     string
		token    string
		wantCode int
	}{
		{"token accepted", "tok-app", exitOK},
		{"token refused", "tok-other", exitFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tok := filepath.Join(dir, "token")
			if err := os.WriteFile(tok, []byte(tt.token+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			certs := filepath.Join(dir, "certs")
			code, _, stderr := runBinary(t, 20*time.Second, []string{"POD_NAMESPACE=ns1", "SERVICE_ACCOUNT=app", "TRUST_DOMAIN=cluster.local"},
				"agent", "--xds-address", "127.0.0.1:1", "--xds-listen", "127.0.0.1:0",
				"--bootstrap-out", filepath.Join(dir, "b.json"), "--cert-dir", certs,
				"--ca-address", lis.Addr().String(), "--ca-token-file", tok, "--cert-lifetime", "1h",
				"--", "true")
			if code != tt.wantCode {
				t.Fatalf("exit code %d, want %d\n%s", code, tt.wantCode, stderr)
			}
			if tt.wantCode != exitOK {
				if _, err := os.Stat(filepath.Join(dir, "b.json")); err == nil {
					t.Error("bootstrap written although no certificate could be had")
				}
				return
			}
			pair, err := tls.LoadX509KeyPair(filepath.Join(certs, "cert-chain.pem"), filepath.Join(certs, "key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			if got, err := identity.FromCert(pair.Leaf); err != nil || got != want {
				t.Errorf("certificate for %v (%v), want %v", got, err, want)
			}
			root, err := os.ReadFile(filepath.Join(certs, "root-cert.pem"))
			if err != nil {
				t.Fatal(err)
			}
			if string(root) != string(ca.RootPEM()) {
				t.Errorf("root-cert.pem is not the CA's root")
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(root)
			if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
				t.Errorf("chain does not verify against root-cert.pem: %v", err)
			}
		})
	}
}
