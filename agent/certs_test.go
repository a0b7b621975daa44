package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/meshlet/meshlet/identity"
)

func testFiles(t *testing.T) CertFiles {
	dir := filepath.Join(t.TempDir(), "var", "lib", "istio", "data")
	return CertFiles{
		Cert: filepath.Join(dir, "cert-chain.pem"),
		Key:  filepath.Join(dir, "key.pem"),
		Root: filepath.Join(dir, "root-cert.pem"),
	}
}

// loadFiles checks the files the way grpc's file_watcher uses them: the
// chain and key make a pair, and the root verifies the chain.
func loadFiles(t *testing.T, f CertFiles) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		t.Fatalf("chain and key: %v", err)
	}
	rootPEM, err := os.ReadFile(f.Root)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(rootPEM) {
		t.Fatal("root file holds no certificate")
	}
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Fatalf("chain does not verify against the root file: %v", err)
	}
	if fi, err := os.Stat(f.Key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	return pair.Leaf
}

func TestCertWriterWritesAndRotates(t *testing.T) {
	ca, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	id := identity.ID{TrustDomain: "cluster.local", Namespace: "ns1", ServiceAccount: "app"}
	files := testFiles(t)
	w, err := StartCertWriter(context.Background(), CertWriterOptions{
		Files: files,
		Fetch: func(context.Context) (*tls.Certificate, *x509.CertPool, error) {
			c, err := ca.Issue(id, 2*time.Second)
			return c, ca.Roots(), err
		},
		Rotation: identity.RotationOptions{Fraction: 0.5},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	first := loadFiles(t, files)
	if got, err := identity.FromCert(first); err != nil || got != id {
		t.Fatalf("written certificate is for %v (%v), want %v", got, err, id)
	}
	deadline := time.Now().Add(5 * time.Second)
	for w.Writes() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no renewal written within 5s of a 2s certificate (writes %d)", w.Writes())
		}
		time.Sleep(20 * time.Millisecond)
	}
	second := loadFiles(t, files)
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("renewal left the same certificate in the files")
	}
	if !second.NotAfter.After(first.NotAfter) {
		t.Errorf("renewed certificate expires %v, not after the first's %v", second.NotAfter, first.NotAfter)
	}
}

func TestCertWriterRejects(t *testing.T) {
	ca, _ := identity.NewEphemeralCA()
	other, _ := identity.NewEphemeralCA()
	id := identity.ID{TrustDomain: "cluster.local", Namespace: "ns1", ServiceAccount: "app"}
	tests := []struct {
		name  string
		files CertFiles
		fetch identity.FetchFunc
	}{
		{"no source", testFiles(t), nil},
		{"missing path", CertFiles{Cert: "c"}, func(context.Context) (*tls.Certificate, *x509.CertPool, error) {
			c, err := ca.Issue(id, time.Hour)
			return c, ca.Roots(), err
		}},
		{"bundle does not verify the certificate", testFiles(t), func(context.Context) (*tls.Certificate, *x509.CertPool, error) {
			c, err := ca.Issue(id, time.Hour)
			return c, other.Roots(), err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			w, err := StartCertWriter(ctx, CertWriterOptions{Files: tt.files, Fetch: tt.fetch})
			if err == nil {
				w.Close()
				t.Fatal("no error")
			}
			if _, serr := os.Stat(tt.files.Cert); serr == nil {
				t.Errorf("a certificate file was written despite %v", err)
			}
		})
	}
}
