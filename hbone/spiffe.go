package hbone

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrNoSPIFFEID is returned when a peer certificate carries no spiffe:// URI
// SAN; an HBONE peer without one is not a mesh workload.
var ErrNoSPIFFEID = errors.New("certificate has no SPIFFE ID")

// Peer is the authenticated identity at the other end of a tunnel.
type Peer struct {
	// ID is the SPIFFE ID, e.g. spiffe://cluster.local/ns/default/sa/web.
	ID string
	// TrustDomain is ID's authority (cluster.local).
	TrustDomain string
	// Chain is the verified certificate chain, leaf first.
	Chain []*x509.Certificate
}

// TrustDomain returns the trust domain of a SPIFFE ID ("spiffe://TD/...").
func TrustDomain(id string) (string, error) {
	u, err := url.Parse(id)
	if err != nil {
		return "", fmt.Errorf("spiffe id %q: %w", id, err)
	}
	if u.Scheme != "spiffe" || u.Host == "" || u.User != nil || u.Port() != "" {
		return "", fmt.Errorf("spiffe id %q: want spiffe://TRUST_DOMAIN/PATH", id)
	}
	return strings.ToLower(u.Host), nil
}

// spiffeID returns the single spiffe:// URI SAN of cert. The SPIFFE X.509
// profile allows exactly one; more is treated as malformed.
func spiffeID(cert *x509.Certificate) (string, error) {
	var id string
	for _, u := range cert.URIs {
		if u.Scheme != "spiffe" {
			continue
		}
		if id != "" {
			return "", fmt.Errorf("certificate has more than one SPIFFE ID")
		}
		id = u.String()
	}
	if id == "" {
		return "", ErrNoSPIFFEID
	}
	return id, nil
}

// verifyPeer checks chain against roots (any key usage: workload certs are
// used as both client and server certificates) and returns the peer's
// identity. Host names are not checked: SPIFFE identity replaces them.
func verifyPeer(chain []*x509.Certificate, roots *x509.CertPool) (Peer, error) {
	if len(chain) == 0 {
		return Peer{}, errors.New("peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return Peer{}, fmt.Errorf("peer certificate: %w", err)
	}
	id, err := spiffeID(chain[0])
	if err != nil {
		return Peer{}, fmt.Errorf("peer certificate: %w", err)
	}
	td, err := TrustDomain(id)
	if err != nil {
		return Peer{}, fmt.Errorf("peer certificate: %w", err)
	}
	return Peer{ID: id, TrustDomain: td, Chain: chain}, nil
}

// SameTrustDomain returns a peer policy admitting any identity of the trust
// domain td, Istio's default for HBONE when no authorization policy narrows
// it.
func SameTrustDomain(td string) func(Peer) error {
	td = strings.ToLower(td)
	return func(p Peer) error {
		if p.TrustDomain != td {
			return fmt.Errorf("peer %s: trust domain %q, want %q", p.ID, p.TrustDomain, td)
		}
		return nil
	}
}
