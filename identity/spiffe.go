package identity

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ID is an Istio-style SPIFFE ID: spiffe://TRUST_DOMAIN/ns/NAMESPACE/sa/SERVICE_ACCOUNT.
// The zero ID is "no identity" (a plaintext peer).
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

// ErrNoID is wrapped by FromCert and PeerID when a certificate or
// connection carries no SPIFFE ID at all, as opposed to a malformed one.
var ErrNoID = errors.New("no SPIFFE ID")

const spiffeScheme = "spiffe://"

// Parse parses and validates s. Errors name the offending part, e.g.
// `spiffe id "spiffe://td/ns//sa/x": namespace is empty`.
func Parse(s string) (ID, error) {
	id, err := parse(s)
	if err != nil {
		return ID{}, fmt.Errorf("spiffe id %q: %w", s, err)
	}
	return id, nil
}

func parse(s string) (ID, error) {
	if len(s) > 2048 {
		return ID{}, errors.New("longer than 2048 bytes")
	}
	// The scheme is compared case-insensitively (RFC 3986); everything
	// after it is case-sensitive except the trust domain, which must
	// already be lower case.
	if len(s) < len(spiffeScheme) || !strings.EqualFold(s[:len(spiffeScheme)], spiffeScheme) {
		return ID{}, errors.New(`scheme must be "spiffe://"`)
	}
	rest := s[len(spiffeScheme):]
	td, path, _ := strings.Cut(rest, "/")
	if err := validateTrustDomain(td); err != nil {
		return ID{}, err
	}
	if path == "" {
		return ID{}, errors.New("path is missing: want /ns/NAMESPACE/sa/SERVICE_ACCOUNT")
	}
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		if err := validateSegment(seg); err != nil {
			return ID{}, fmt.Errorf("path segment %d: %w", i+1, err)
		}
	}
	if len(segs) != 4 || segs[0] != "ns" || segs[2] != "sa" {
		return ID{}, fmt.Errorf("path %q is not /ns/NAMESPACE/sa/SERVICE_ACCOUNT", "/"+path)
	}
	return ID{TrustDomain: td, Namespace: segs[1], ServiceAccount: segs[3]}, nil
}

// validateTrustDomain applies the SPIFFE ID spec: lower-case letters,
// digits, '.', '-' and '_' only, so no port, user info, query or fragment
// can hide in it.
func validateTrustDomain(td string) error {
	if td == "" {
		return errors.New("trust domain is empty")
	}
	if len(td) > 255 {
		return errors.New("trust domain is longer than 255 bytes")
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '.', c == '-', c == '_':
		case c >= 'A' && c <= 'Z':
			return fmt.Errorf("trust domain %q has an upper-case letter (trust domains are lower case)", td)
		default:
			return fmt.Errorf("trust domain %q has invalid character %q", td, c)
		}
	}
	return nil
}

// validateSegment applies the SPIFFE path rules: non-empty, not "." or
// "..", letters, digits, '.', '-' and '_' only (no percent-encoding).
func validateSegment(seg string) error {
	switch seg {
	case "":
		return errors.New("is empty (double or trailing slash)")
	case ".", "..":
		return fmt.Errorf("%q is not allowed", seg)
	}
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("%q has invalid character %q", seg, c)
		}
	}
	return nil
}

// Validate reports whether id would survive a String/Parse round trip.
func (id ID) Validate() error {
	_, err := Parse(id.String())
	return err
}

// IsZero reports whether id is the zero ID.
func (id ID) IsZero() bool { return id == ID{} }

// String renders spiffe://TD/ns/NS/sa/SA; the zero ID renders as "".
func (id ID) String() string {
	if id.IsZero() {
		return ""
	}
	return spiffeScheme + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL returns id as a URL for an X.509 URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// FromCert returns the SPIFFE ID in a certificate's URI SAN. An X.509-SVID
// has exactly one URI SAN; a certificate with several is rejected rather
// than guessed at. A certificate without any wraps ErrNoID.
func FromCert(c *x509.Certificate) (ID, error) {
	if c == nil {
		return ID{}, fmt.Errorf("certificate: %w", ErrNoID)
	}
	switch len(c.URIs) {
	case 0:
		return ID{}, fmt.Errorf("certificate %q: no URI SAN: %w", c.Subject, ErrNoID)
	case 1:
	default:
		return ID{}, fmt.Errorf("certificate %q: %d URI SANs, an X.509-SVID has exactly one", c.Subject, len(c.URIs))
	}
	id, err := Parse(c.URIs[0].String())
	if err != nil {
		return ID{}, fmt.Errorf("certificate %q: URI SAN: %w", c.Subject, err)
	}
	return id, nil
}

// Matcher decides whether a verified peer ID is acceptable; a non-nil
// error refuses the handshake and is what the peer's failure says.
type Matcher func(ID) error

// MatchAny accepts any ID the trust bundle verified.
func MatchAny() Matcher { return func(ID) error { return nil } }

// MatchID accepts exactly one of ids.
func MatchID(ids ...ID) Matcher {
	return func(got ID) error {
		for _, want := range ids {
			if got == want {
				return nil
			}
		}
		if len(ids) == 1 {
			return fmt.Errorf("peer identity %s, want %s", got, ids[0])
		}
		return fmt.Errorf("peer identity %s is not one of the %d expected", got, len(ids))
	}
}

// MatchTrustDomain accepts any ID in trust domain td.
func MatchTrustDomain(td string) Matcher {
	return func(got ID) error {
		if got.TrustDomain != td {
			return fmt.Errorf("peer identity %s: trust domain %q, want %q", got, got.TrustDomain, td)
		}
		return nil
	}
}
