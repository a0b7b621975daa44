package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ServerConfig returns a TLS 1.2+ server config that presents src's current
// certificate and requires a client certificate chaining to src's trust
// bundle whose SPIFFE ID match accepts (nil accepts any verified ID). Set
// NextProtos on the result as the listener needs.
func ServerConfig(src Source, match Matcher) *tls.Config {
	if match == nil {
		match = MatchAny()
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return src.Certificate()
		},
		// crypto/tls cannot verify against a bundle that rotates, nor
		// without a DNS name; VerifyConnection does both checks itself.
		ClientAuth:       tls.RequireAnyClientCert,
		VerifyConnection: verifyPeer(src, match, x509.ExtKeyUsageClientAuth),
		// crypto/tls skips its own expiry check of a resumed session's
		// client certificate under RequireAnyClientCert, so a resumption
		// after the peer's short-lived certificate expired would fail in
		// VerifyConnection instead of falling back to a full handshake.
		// Mesh connections are long-lived and pooled; full handshakes
		// cost little.
		SessionTicketsDisabled: true,
	}
}

// ClientConfig returns a TLS 1.2+ client config that presents src's
// current certificate and accepts only a server whose certificate chains to
// src's trust bundle and whose SPIFFE ID match accepts. A nil match accepts
// any verified ID, which only proves the peer is in the mesh. Do not set
// ClientSessionCache on the result: with the standard verification
// replaced, crypto/tls would resume sessions whose server certificate has
// since expired.
func ClientConfig(src Source, match Matcher) *tls.Config {
	if match == nil {
		match = MatchAny()
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return src.Certificate()
		},
		// SPIFFE peers are verified by URI SAN, not host name: the
		// standard verification is replaced, not skipped (VerifyConnection).
		InsecureSkipVerify: true,
		VerifyConnection:   verifyPeer(src, match, x509.ExtKeyUsageServerAuth),
	}
}

// verifyPeer checks the peer's chain against the current trust bundle and
// its SPIFFE ID against match. It runs on full and resumed handshakes.
func verifyPeer(src Source, match Matcher, usage x509.ExtKeyUsage) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("peer sent no certificate")
		}
		roots, err := src.Roots()
		if err != nil {
			return fmt.Errorf("trust bundle: %w", err)
		}
		leaf := cs.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots:         roots,
			Intermediates: inter,
			KeyUsages:     []x509.ExtKeyUsage{usage},
		}); err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		id, err := FromCert(leaf)
		if err != nil {
			return fmt.Errorf("peer: %w", err)
		}
		return match(id)
	}
}

// PeerID returns the SPIFFE ID of a connection's peer. It wraps ErrNoID
// when the peer presented no certificate.
func PeerID(cs tls.ConnectionState) (ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return ID{}, fmt.Errorf("peer certificate: %w", ErrNoID)
	}
	return FromCert(cs.PeerCertificates[0])
}

// Static is a Source that never changes: fixed material, e.g. parsed once
// from configuration.
type Static struct {
	Cert *tls.Certificate
	Pool *x509.CertPool
}

// Certificate returns s.Cert or an error when none is set.
func (s Static) Certificate() (*tls.Certificate, error) {
	if s.Cert == nil {
		return nil, errors.New("no certificate configured")
	}
	return s.Cert, nil
}

// Roots returns s.Pool or an error when none is set.
func (s Static) Roots() (*x509.CertPool, error) {
	if s.Pool == nil {
		return nil, errors.New("no trust bundle configured")
	}
	return s.Pool, nil
}
