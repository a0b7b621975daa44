package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/meshlet/meshlet/identity"
)

// CertWriterOptions configure a CertWriter.
type CertWriterOptions struct {
	Files CertFiles
	// Fetch issues a new certificate with its trust bundle (identity's
	// built-in CA or Istio CA client).
	Fetch    identity.FetchFunc
	Rotation identity.RotationOptions
}

// CertWriter keeps the workload certificate files current for the
// application's file_watcher provider: it fetches through an
// identity.Rotating source (renewal at a fraction of the lifetime, retries
// with backoff) and writes every new certificate before the Rotating
// source adopts it, so the files are never older than what the agent
// itself presents upstream.
type CertWriter struct {
	files  CertFiles
	rot    *identity.Rotating
	writes atomic.Int64
}

// StartCertWriter fetches and writes the first certificate (bounded by ctx)
// and keeps renewing until Close.
func StartCertWriter(ctx context.Context, o CertWriterOptions) (*CertWriter, error) {
	if o.Fetch == nil {
		return nil, errors.New("cert files: no certificate source")
	}
	if o.Files.Cert == "" || o.Files.Key == "" || o.Files.Root == "" {
		return nil, errors.New("cert files: cert, key and root paths are all required")
	}
	w := &CertWriter{files: o.Files}
	rot, err := identity.NewRotating(ctx, func(ctx context.Context) (*tls.Certificate, *x509.CertPool, error) {
		cert, roots, err := o.Fetch(ctx)
		if err != nil {
			return nil, nil, err
		}
		if err := w.write(cert, roots); err != nil {
			return nil, nil, err
		}
		return cert, roots, nil
	}, o.Rotation)
	if err != nil {
		return nil, err
	}
	w.rot = rot
	return w, nil
}

// Source is the current certificate, for the agent's own upstream mTLS.
func (w *CertWriter) Source() identity.Source { return w.rot }

// Writes counts the certificates written, the first one included.
func (w *CertWriter) Writes() int64 { return w.writes.Load() }

// Files are the paths written.
func (w *CertWriter) Files() CertFiles { return w.files }

// Close stops renewing; the files stay.
func (w *CertWriter) Close() { w.rot.Close() }

// write renders the three PEM files and replaces them: root first and the
// chain last, so a reader that sees the new chain also finds its key and
// root (grpc's file_watcher rejects a chain with a mismatched key and keeps
// its previous certificate until the next refresh).
func (w *CertWriter) write(cert *tls.Certificate, roots *x509.CertPool) error {
	chainPEM, keyPEM, rootPEM, err := encodeMaterial(cert, roots)
	if err != nil {
		return fmt.Errorf("cert files: %w", err)
	}
	if err := writeFileAtomic(w.files.Root, rootPEM, 0o644); err != nil {
		return fmt.Errorf("cert files: root: %w", err)
	}
	if err := writeFileAtomic(w.files.Key, keyPEM, 0o600); err != nil {
		return fmt.Errorf("cert files: key: %w", err)
	}
	if err := writeFileAtomic(w.files.Cert, chainPEM, 0o644); err != nil {
		return fmt.Errorf("cert files: chain: %w", err)
	}
	w.writes.Add(1)
	return nil
}

// encodeMaterial renders chain, PKCS#8 key and root as PEM. A CertPool
// cannot be listed, so the root is found by verifying the leaf against it:
// the last certificate of the verified chain is the trust anchor the
// application needs.
func encodeMaterial(cert *tls.Certificate, roots *x509.CertPool) (chain, key, root []byte, err error) {
	if cert == nil || len(cert.Certificate) == 0 {
		return nil, nil, nil, errors.New("no certificate")
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, nil, nil, fmt.Errorf("leaf: %w", err)
		}
	}
	inter := x509.NewCertPool()
	for i, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("chain certificate %d: %w", i+1, err)
		}
		inter.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots: roots, Intermediates: inter,
		CurrentTime: leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) / 2),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("certificate does not verify against its trust bundle: %w", err)
	}
	anchor := chains[0][len(chains[0])-1]
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("private key: %w", err)
	}
	key = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	root = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: anchor.Raw})
	return chain, key, root, nil
}
