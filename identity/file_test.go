package identity

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func pemFiles(t *testing.T, c *tls.Certificate) (certPEM, keyPEM []byte) {
	t.Helper()
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range c.Certificate {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: d})...)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

func TestFileSourceReloadsOnChange(t *testing.T) {
	ca, err := NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opts := FileOptions{
		CertFile:  filepath.Join(dir, "cert-chain.pem"),
		KeyFile:   filepath.Join(dir, "key.pem"),
		RootsFile: filepath.Join(dir, "root-cert.pem"),
		Poll:      10 * time.Millisecond,
	}
	id := ID{"td", "ns", "sa"}
	write := func(name string, b []byte) {
		t.Helper()
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	first := mustIssue(t, ca, id)
	c, k := pemFiles(t, first)
	write(opts.CertFile, c)
	write(opts.KeyFile, k)
	write(opts.RootsFile, ca.RootPEM())

	src, err := NewFileSource(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if got, _ := src.Certificate(); !got.Leaf.Equal(first.Leaf) {
		t.Fatal("initial certificate is not the one on disk")
	}

	// A writer that has replaced the key but not yet the certificate: the
	// pair does not match, so the old certificate stays in use.
	second := mustIssue(t, ca, id)
	c2, k2 := pemFiles(t, second)
	write(opts.KeyFile, k2)
	time.Sleep(100 * time.Millisecond)
	if got, _ := src.Certificate(); !got.Leaf.Equal(first.Leaf) || src.Reloads() != 0 {
		t.Fatalf("half-written update was applied (reloads %d)", src.Reloads())
	}
	// Completing the update is picked up even though the key file, which
	// changed first, does not change again.
	write(opts.CertFile, c2)
	waitFor(t, 2*time.Second, func() bool { got, _ := src.Certificate(); return got.Leaf.Equal(second.Leaf) })

	// A new trust bundle alone is a change too.
	other, _ := NewEphemeralCA()
	write(opts.RootsFile, append(ca.RootPEM(), other.RootPEM()...))
	waitFor(t, 2*time.Second, func() bool { r, _ := src.Roots(); return r.Equal(poolOf(ca, other)) })
	if n := src.Reloads(); n != 2 {
		t.Errorf("reloads = %d, want 2", n)
	}
}

func TestFileSourceStartErrors(t *testing.T) {
	ca, _ := NewEphemeralCA()
	dir := t.TempDir()
	c, k := pemFiles(t, mustIssue(t, ca, ID{"td", "ns", "sa"}))
	good := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	cert, key, roots := good("c", c), good("k", k), good("r", ca.RootPEM())
	junk := good("junk", []byte("not pem"))
	tests := []struct {
		name    string
		opts    FileOptions
		wantErr string
	}{
		{"missing roots option", FileOptions{CertFile: cert, KeyFile: key}, "all required"},
		{"missing file", FileOptions{CertFile: filepath.Join(dir, "nope"), KeyFile: key, RootsFile: roots}, "no such file"},
		{"bad key", FileOptions{CertFile: cert, KeyFile: junk, RootsFile: roots}, "certificate and key"},
		{"bad roots", FileOptions{CertFile: cert, KeyFile: key, RootsFile: junk}, "trust bundle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := NewFileSource(tt.opts)
			if err == nil {
				s.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewFileSource = %v, want error %q", err, tt.wantErr)
			}
		})
	}
}

func poolOf(cas ...*CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Root())
	}
	return p
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
