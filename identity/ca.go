package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// File names of the built-in CA inside its state directory.
const (
	caCertFile = "ca-cert.pem"
	caKeyFile  = "ca-key.pem"
)

const (
	// caLifetime is the root's validity. The root is kept across restarts,
	// so it must outlive any realistic deployment of the embedded default.
	caLifetime = 10 * 365 * 24 * time.Hour
	// DefaultWorkloadTTL is the lifetime of workload certificates when the
	// caller asks for none: Istio's default is 24h.
	DefaultWorkloadTTL = 24 * time.Hour
	// maxBackdate bounds how far before "now" a certificate's NotBefore is
	// set, to tolerate small clock differences between peers.
	maxBackdate = 5 * time.Second
)

// CA is the built-in certificate authority: a self-signed ECDSA P-256 root
// that signs short-lived workload certificates whose only SAN is a SPIFFE
// URI. It is safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	pool    *x509.CertPool
	now     func() time.Time
}

// LoadOrCreateCA loads the CA kept in dir, creating dir and a new root on
// first start. An existing but unreadable, mismatched or expired root is an
// error rather than silently replaced: replacing it would make every peer
// that trusts the old root refuse this one.
func LoadOrCreateCA(dir string) (*CA, error) {
	certPath, keyPath := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	switch {
	case certErr == nil && keyErr == nil:
		ca, err := parseCA(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("built-in CA in %s: %w", dir, err)
		}
		return ca, nil
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
	case certErr != nil && !errors.Is(certErr, os.ErrNotExist):
		return nil, fmt.Errorf("built-in CA: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, os.ErrNotExist):
		return nil, fmt.Errorf("built-in CA: %w", keyErr)
	default:
		return nil, fmt.Errorf("built-in CA in %s: only one of %s and %s exists", dir, caCertFile, caKeyFile)
	}

	ca, certPEM, keyPEM, err := newCA(time.Now())
	if err != nil {
		return nil, fmt.Errorf("built-in CA: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("built-in CA: %w", err)
	}
	// The key goes first and the certificate last, each via rename, so a
	// crash leaves either nothing usable (cert missing: "only one exists"
	// is reported) or a complete pair.
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("built-in CA: %w", err)
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("built-in CA: %w", err)
	}
	return ca, nil
}

// NewEphemeralCA returns a CA that lives only in memory (tests, demos).
func NewEphemeralCA() (*CA, error) {
	ca, _, _, err := newCA(time.Now())
	return ca, err
}

func newCA(now time.Time) (*CA, []byte, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, err
	}
	serial, err := randSerial()
	if err != nil {
		return nil, nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshlet"}, CommonName: "meshlet built-in root CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	ca, err := parseCA(certPEM, keyPEM)
	return ca, certPEM, keyPEM, err
}

func parseCA(certPEM, keyPEM []byte) (*CA, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	cert := pair.Leaf
	if !cert.IsCA {
		return nil, errors.New("root certificate is not a CA")
	}
	if time.Now().After(cert.NotAfter) {
		return nil, fmt.Errorf("root certificate expired at %s", cert.NotAfter.Format(time.RFC3339))
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("root key %T cannot sign", pair.PrivateKey)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: signer, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), pool: pool, now: time.Now}, nil
}

// RootPEM returns the root certificate, PEM-encoded.
func (ca *CA) RootPEM() []byte { return append([]byte(nil), ca.certPEM...) }

// Root returns the root certificate.
func (ca *CA) Root() *x509.Certificate { return ca.cert }

// Roots returns a pool holding only the root. Callers must not modify it.
func (ca *CA) Roots() *x509.CertPool { return ca.pool }

// Sign issues a workload certificate for id and pub, valid for ttl (0 means
// DefaultWorkloadTTL, capped at the root's own expiry). It returns the leaf
// in DER.
func (ca *CA) Sign(id ID, pub crypto.PublicKey, ttl time.Duration) ([]byte, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		ttl = DefaultWorkloadTTL
	}
	now := ca.now()
	serial, err := randSerial()
	if err != nil {
		return nil, err
	}
	// X.509 times have whole seconds and encoding truncates: round up so
	// a short-lived certificate gets at least the lifetime asked for
	// rather than up to a second less.
	notAfter := now.Add(ttl)
	if r := notAfter.Truncate(time.Second); !r.Equal(notAfter) {
		notAfter = r.Add(time.Second)
	}
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// An empty subject makes crypto/x509 mark the SAN extension
		// critical, as the X.509-SVID spec asks.
		NotBefore:             now.Add(-min(maxBackdate, ttl/4)),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate for %s: %w", id, err)
	}
	return der, nil
}

// ParseCSR decodes a PEM certificate signing request, checks its
// signature and returns the SPIFFE ID in its single URI SAN.
func ParseCSR(csrPEM []byte) (ID, *x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return ID{}, nil, errors.New("csr: not a PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return ID{}, nil, fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return ID{}, nil, fmt.Errorf("csr: %w", err)
	}
	if len(csr.URIs) != 1 {
		return ID{}, nil, fmt.Errorf("csr: want exactly one URI SAN, got %d", len(csr.URIs))
	}
	id, err := Parse(csr.URIs[0].String())
	if err != nil {
		return ID{}, nil, fmt.Errorf("csr: %w", err)
	}
	return id, csr, nil
}

// SignCSR issues a certificate for the SPIFFE ID in a PEM certificate
// signing request, without any authorization check: callers decide first
// whether the requester may have that ID. It returns the chain as PEM
// strings, leaf first and root last, as Istio's CA API does.
func (ca *CA) SignCSR(csrPEM []byte, ttl time.Duration) (ID, []string, error) {
	id, csr, err := ParseCSR(csrPEM)
	if err != nil {
		return ID{}, nil, err
	}
	der, err := ca.Sign(id, csr.PublicKey, ttl)
	if err != nil {
		return ID{}, nil, err
	}
	leaf := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return id, []string{string(leaf), string(ca.certPEM)}, nil
}

// Issue creates a fresh key and a certificate for id: the material a
// workload Source presents.
func (ca *CA) Issue(id ID, ttl time.Duration) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := ca.Sign(id, key.Public(), ttl)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	// The chain holds the leaf only: peers are configured with the root,
	// and sending it would only add bytes to every handshake.
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

func randSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// writeFileAtomic writes data to a temporary file next to path and renames
// it into place, so readers never see a partial file.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
