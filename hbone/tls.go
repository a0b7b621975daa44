package hbone

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/meshlet/meshlet/identity"
)

// alpnH2 is the only protocol spoken on 15008.
const alpnH2 = "h2"

// serverTLS presents src's current certificate, requires a client
// certificate chaining to src's current roots and hands the peer to
// authorize. Everything is fetched per handshake so rotation needs no
// reconfiguration. A rejected peer fails the handshake: the client sees the
// connection end, never a tunnel.
func serverTLS(src identity.Source, authorize func(Peer) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{alpnH2},
		// Chain verification is done in VerifyConnection against the
		// source's roots of the moment, not a pool fixed at construction.
		ClientAuth: tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return src.Certificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			roots, err := src.Roots()
			if err != nil {
				return fmt.Errorf("hbone server: trust bundle: %w", err)
			}
			p, err := verifyPeer(cs.PeerCertificates, roots)
			if err != nil {
				return err
			}
			if authorize == nil {
				authorize, err = ownTrustDomain(src)
				if err != nil {
					return err
				}
			}
			return authorize(p)
		},
	}
}

// clientTLS presents src's certificate and accepts only a server whose
// SPIFFE ID is want (any mesh identity when want is empty) and that
// verify, when set, accepts.
func clientTLS(src identity.Source, want string, verify func(Peer) error) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{alpnH2},
		// The server is identified by its SPIFFE ID, not a DNS name; the
		// chain is verified in VerifyConnection.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return src.Certificate()
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			roots, err := src.Roots()
			if err != nil {
				return fmt.Errorf("hbone client: trust bundle: %w", err)
			}
			p, err := verifyPeer(cs.PeerCertificates, roots)
			if err != nil {
				return err
			}
			if want != "" && p.ID != want {
				return fmt.Errorf("%w: server is %s, want %s", ErrIdentityMismatch, p.ID, want)
			}
			if verify != nil {
				if err := verify(p); err != nil {
					return fmt.Errorf("%w: %v", ErrIdentityMismatch, err)
				}
			}
			return nil
		},
	}
}

// ErrIdentityMismatch is returned when the tunnel peer is not the identity
// the caller expected.
var ErrIdentityMismatch = errors.New("hbone: peer identity mismatch")

// ownTrustDomain is the default server policy: the peer must share the
// trust domain of the server's own certificate.
func ownTrustDomain(src identity.Source) (func(Peer) error, error) {
	cert, err := src.Certificate()
	if err != nil {
		return nil, fmt.Errorf("hbone server: certificate: %w", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if len(cert.Certificate) == 0 {
			return nil, errors.New("hbone server: empty certificate")
		}
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("hbone server: certificate: %w", err)
		}
	}
	id, err := spiffeID(leaf)
	if err != nil {
		return nil, fmt.Errorf("hbone server: own certificate: %w", err)
	}
	td, err := TrustDomain(id)
	if err != nil {
		return nil, err
	}
	return SameTrustDomain(td), nil
}
