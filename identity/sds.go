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
	roots            atomic.Pointer[parsedSecret[trust]]
}

// trust is a parsed validation secret: the bundle and its
// max_verify_depth (nil: unset).
type trust struct {
	pool  *x509.CertPool
	depth *uint32
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
	pool, _, err := s.Trust()
	return pool, err
}

// Trust returns the validation secret's trusted_ca and max_verify_depth,
// both from the same version of the secret.
func (s *SDSSource) Trust() (*x509.CertPool, *uint32, error) {
	sec, err := s.secret(s.caName, "trust bundle")
	if err != nil {
		return nil, nil, err
	}
	if r := s.roots.Load(); r != nil && r.from == sec {
		return r.val.pool, r.val.depth, r.err
	}
	p := &parsedSecret[trust]{from: sec}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(sec.TrustedCAPEM) {
		p.err = fmt.Errorf("sds secret %q: no PEM certificates in trusted_ca", sec.Name)
	} else {
		p.val = trust{pool: pool, depth: sec.MaxVerifyDepth}
	}
	s.roots.Store(p)
	return p.val.pool, p.val.depth, p.err
}

// TrustSource is a Source whose trust bundle may come with its own
// max_verify_depth: an SDS validation_context secret.
type TrustSource interface {
	// Trust returns the current trust bundle and the max_verify_depth
	// delivered with it (nil when none was).
	Trust() (*x509.CertPool, *uint32, error)
}

// TrustOf returns s's Trust, or for a Source that carries no depth its
// Roots with a nil depth. Peer verification uses it for SDS validation
// contexts, so a depth set in the secret is enforced.
func TrustOf(s Source) func() (*x509.CertPool, *uint32, error) {
	if t, ok := s.(TrustSource); ok {
		return t.Trust
	}
	return func() (*x509.CertPool, *uint32, error) {
		pool, err := s.Roots()
		return pool, nil, err
	}
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

func (s split) Certificate() (*tls.Certificate, error)  { return s.certs.Certificate() }
func (s split) Roots() (*x509.CertPool, error)          { return s.roots.Roots() }
func (s split) Trust() (*x509.CertPool, *uint32, error) { return TrustOf(s.roots)() }

func orMissing(s Source) Source {
	if s == nil {
		return Static{}
	}
	return s
}
