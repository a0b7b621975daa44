package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/meshlet/meshlet/state"
)

// SDSSource is a Source backed by SDS secrets that the xDS client keeps
// in a state.Store: the certificate from one secret (Istio's "default"),
// the trust bundle from another ("ROOTCA"). It reads the store on every
// call and re-parses only when a secret was replaced, so rotation is a
// secret update and nothing else.
type SDSSource struct {
	store            *state.Store
	certName, caName string
	cert             atomic.Pointer[parsedSecret[*tls.Certificate]]
	roots            atomic.Pointer[parsedSecret[*x509.CertPool]]
}

// parsedSecret caches the parse of one secret value, keyed by the
// pointer: a published *state.Secret never changes.
type parsedSecret[T any] struct {
	from *state.Secret
	val  T
	err  error
}

// NewSDSSource returns a Source for the named secrets. Either name may be
// empty when that half is not needed; asking for it is then an error.
func NewSDSSource(store *state.Store, certName, caName string) *SDSSource {
	return &SDSSource{store: store, certName: certName, caName: caName}
}

// Certificate parses the certificate secret's chain and key.
func (s *SDSSource) Certificate() (*tls.Certificate, error) {
	sec, err := s.secret(s.certName, "certificate")
	if err != nil {
		return nil, err
	}
	if c := s.cert.Load(); c != nil && c.from == sec {
		return c.val, c.err
	}
	p := &parsedSecret[*tls.Certificate]{from: sec}
	if len(sec.CertChainPEM) == 0 {
		p.err = fmt.Errorf("sds secret %q: has no tls_certificate", sec.Name)
	} else if c, err := tls.X509KeyPair(sec.CertChainPEM, sec.KeyPEM); err != nil {
		p.err = fmt.Errorf("sds secret %q: %w", sec.Name, err)
	} else {
		p.val = &c
	}
	s.cert.Store(p)
	return p.val, p.err
}

// Roots parses the validation secret's trusted_ca.
func (s *SDSSource) Roots() (*x509.CertPool, error) {
	sec, err := s.secret(s.caName, "trust bundle")
	if err != nil {
		return nil, err
	}
	if r := s.roots.Load(); r != nil && r.from == sec {
		return r.val, r.err
	}
	p := &parsedSecret[*x509.CertPool]{from: sec}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(sec.TrustedCAPEM) {
		p.err = fmt.Errorf("sds secret %q: no PEM certificates in trusted_ca", sec.Name)
	} else {
		p.val = pool
	}
	s.roots.Store(p)
	return p.val, p.err
}

func (s *SDSSource) secret(name, what string) (*state.Secret, error) {
	if name == "" {
		return nil, fmt.Errorf("sds: no secret configured for the %s", what)
	}
	sec := s.store.Load().Secrets[name]
	if sec == nil {
		return nil, fmt.Errorf("sds secret %q: %w", name, ErrSecretNotReady)
	}
	return sec, nil
}

// ErrSecretNotReady is wrapped when a referenced SDS secret has not
// arrived (yet): a handshake then fails, as Envoy's listener would not
// be warm.
var ErrSecretNotReady = errors.New("not received from the control plane")

// SourceForSDS returns the Source a TLS context's SDS reference resolves
// to. Names delivered over ADS come from store; names served by the local
// agent (ref.Agent, Istio's sds-grpc) and any half the context does not
// take from SDS come from local, the proxy's own identity Source (built-in
// CA, Istio CA client or files). local may be nil when nothing needs it.
func SourceForSDS(store *state.Store, ref state.SDSRef, local Source) Source {
	if ref.Agent {
		return orMissing(local)
	}
	var certs, roots Source = orMissing(local), orMissing(local)
	if ref.Certificate != "" {
		certs = NewSDSSource(store, ref.Certificate, "")
	}
	if ref.Validation != "" {
		roots = NewSDSSource(store, "", ref.Validation)
	}
	return split{certs: certs, roots: roots}
}

// split takes the certificate from one Source and the roots from another.
type split struct{ certs, roots Source }

func (s split) Certificate() (*tls.Certificate, error) { return s.certs.Certificate() }
func (s split) Roots() (*x509.CertPool, error)         { return s.roots.Roots() }

func orMissing(s Source) Source {
	if s == nil {
		return Static{}
	}
	return s
}
