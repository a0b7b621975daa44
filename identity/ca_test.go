package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCAPersistsAcrossRestarts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	first, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, caKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode().Perm())
	}
	second, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Root().Equal(second.Root()) {
		t.Fatal("restart created a new root instead of reusing the stored one")
	}
	// A certificate issued before the restart verifies against the
	// reloaded root, and one issued after against the original.
	id := ID{"cluster.local", "default", "app"}
	before, err := first.Issue(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	after, err := second.Issue(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]*x509.CertPool{"reloaded": second.Roots(), "original": first.Roots()} {
		for _, leaf := range []*x509.Certificate{before.Leaf, after.Leaf} {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: c, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("verify against %s root: %v", name, err)
			}
		}
	}
	if k, ok := first.Root().PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("root key is %T, want ECDSA P-256", first.Root().PublicKey)
	}
}

func TestCALoadErrors(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(dir string)
		wantErr string
	}{
		{"only cert", func(dir string) {
			os.WriteFile(filepath.Join(dir, caCertFile), []byte("x"), 0o644)
		}, "only one of"},
		{"garbage", func(dir string) {
			os.WriteFile(filepath.Join(dir, caCertFile), []byte("x"), 0o644)
			os.WriteFile(filepath.Join(dir, caKeyFile), []byte("y"), 0o600)
		}, "built-in CA in"},
		{"mismatched key", func(dir string) {
			a, _, _, _ := newCA(time.Now())
			_, _, keyPEM, _ := newCA(time.Now())
			os.WriteFile(filepath.Join(dir, caCertFile), a.RootPEM(), 0o644)
			os.WriteFile(filepath.Join(dir, caKeyFile), keyPEM, 0o600)
		}, "private key does not match"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			tt.setup(dir)
			_, err := LoadOrCreateCA(dir)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("LoadOrCreateCA = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestCAWorkloadCertificate(t *testing.T) {
	ca, err := NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	id := ID{"td", "ns", "sa"}
	c, err := ca.Issue(id, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	got, err := FromCert(c.Leaf)
	if err != nil || got != id {
		t.Fatalf("FromCert = %v, %v; want %v", got, err, id)
	}
	if life := time.Until(c.Leaf.NotAfter); life > 3*time.Second || life < 1900*time.Millisecond {
		t.Errorf("remaining lifetime %v, want 2s to 3s (rounded up to whole seconds)", life)
	}
	if c.Leaf.IsCA || len(c.Leaf.DNSNames) != 0 {
		t.Errorf("leaf IsCA=%v DNSNames=%v; want a non-CA with only a URI SAN", c.Leaf.IsCA, c.Leaf.DNSNames)
	}
	if _, err := ca.Issue(ID{"TD", "ns", "sa"}, 0); err == nil {
		t.Error("Issue accepted an invalid ID")
	}
}

func TestCASignCSR(t *testing.T) {
	ca, err := NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	id := ID{"td", "ns", "sa"}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good, err := NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	noURI, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{DNSNames: []string{"x"}}, key)
	tests := []struct {
		name    string
		csr     []byte
		wantErr string
	}{
		{"good", good, ""},
		{"not pem", []byte("hello"), "not a PEM"},
		{"no uri", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: noURI}), "exactly one URI SAN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			gotID, chain, err := ca.SignCSR(tt.csr, time.Hour)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("SignCSR = %v, want error %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || gotID != id || len(chain) != 2 || chain[1] != string(ca.RootPEM()) {
				t.Fatalf("SignCSR = %v, %d certs, %v", gotID, len(chain), err)
			}
		})
	}
}
