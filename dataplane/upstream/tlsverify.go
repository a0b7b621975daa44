package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/meshlet/meshlet/state"
)

// PeerCheck verifies a TLS peer the way Envoy's default certificate
// validator does: the chain against a trust bundle (fetched per handshake
// so a rotated bundle applies at once), then the subject alt names against
// the configured matchers. Host names are checked only through matchers,
// never implicitly. The listener side uses it too.
type PeerCheck struct {
	// Roots returns the current trust bundle; nil (and nil Trust) skips
	// chain verification (no validation context).
	Roots func() (*x509.CertPool, error)
	// SANs accept the peer when any one matches; empty accepts any name.
	SANs []state.SANMatcher
	// Usage is the extended key usage the leaf must allow.
	Usage x509.ExtKeyUsage
	// Require fails a handshake in which the peer sent no certificate.
	Require bool
	// MaxDepth is max_verify_depth (nil = no limit): some verified chain
	// must hold at most this many certificates above the leaf, the trust
	// anchor included, as Envoy counts it (depth 1 = leaf and one CA).
	MaxDepth *uint32
	// Trust, when set, is used instead of Roots: the trust bundle of an
	// SDS validation secret with the secret's max_verify_depth, which
	// overrides MaxDepth when set (Envoy merges the secret's validation
	// context over the context's own).
	Trust func() (*x509.CertPool, *uint32, error)
}

// roots returns the bundle to verify against and the depth limit.
func (p *PeerCheck) roots() (*x509.CertPool, *uint32, error) {
	if p.Trust == nil {
		pool, err := p.Roots()
		return pool, p.MaxDepth, err
	}
	pool, depth, err := p.Trust()
	if depth == nil {
		depth = p.MaxDepth
	}
	return pool, depth, err
}

// Verify is a tls.Config.VerifyConnection hook.
func (p *PeerCheck) Verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		if p.Require {
			return errors.New("peer presented no certificate")
		}
		return nil
	}
	leaf := cs.PeerCertificates[0]
	if p.Roots != nil || p.Trust != nil {
		roots, depth, err := p.roots()
		if err != nil {
			return fmt.Errorf("trust bundle: %w", err)
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{p.Usage}})
		if err != nil {
			return fmt.Errorf("peer certificate: %w", err)
		}
		if err := checkDepth(chains, depth); err != nil {
			return err
		}
	}
	return MatchSANs(leaf, p.SANs)
}

// MatchSANs reports (as an error naming the peer's SANs) whether none of
// ms accepts leaf; no matchers accept any certificate.
func MatchSANs(leaf *x509.Certificate, ms []state.SANMatcher) error {
	if len(ms) == 0 {
		return nil
	}
	for i := range ms {
		if sanMatches(leaf, &ms[i]) {
			return nil
		}
	}
	var names []string
	for _, u := range leaf.URIs {
		names = append(names, "URI:"+u.String())
	}
	for _, d := range leaf.DNSNames {
		names = append(names, "DNS:"+d)
	}
	return fmt.Errorf("peer certificate SANs [%s] match none of the %d subject alt name matchers", strings.Join(names, " "), len(ms))
}

func sanMatches(leaf *x509.Certificate, m *state.SANMatcher) bool {
	if m.Type == state.SANAny || m.Type == state.SANDNS {
		for _, d := range leaf.DNSNames {
			if dnsSANMatches(d, &m.Match) {
				return true
			}
		}
	}
	if m.Type == state.SANAny || m.Type == state.SANURI {
		for _, u := range leaf.URIs {
			if matchString(&m.Match, u.String()) {
				return true
			}
		}
	}
	if m.Type == state.SANAny || m.Type == state.SANEmail {
		for _, e := range leaf.EmailAddresses {
			if matchString(&m.Match, e) {
				return true
			}
		}
	}
	if m.Type == state.SANAny || m.Type == state.SANIP {
		for _, ip := range leaf.IPAddresses {
			if matchString(&m.Match, ip.String()) {
				return true
			}
		}
	}
	return false
}

// dnsSANMatches applies Envoy's DNS rule: an exact matcher also accepts a
// certificate name "*.example.com" for a single label in place of the
// wildcard ("foo.example.com", not "a.b.example.com").
func dnsSANMatches(san string, m *state.StringMatcher) bool {
	if matchString(m, san) {
		return true
	}
	if m.Kind != state.StringExact || !strings.HasPrefix(san, "*.") {
		return false
	}
	label, rest, ok := strings.Cut(m.Value, ".")
	if !ok || label == "" {
		return false
	}
	if m.IgnoreCase {
		return strings.EqualFold(rest, san[2:])
	}
	return rest == san[2:]
}

// matchString evaluates an Envoy StringMatcher (ASCII case folding, as
// Envoy does).
func matchString(m *state.StringMatcher, s string) bool {
	v := m.Value
	if m.IgnoreCase {
		s, v = strings.ToLower(s), strings.ToLower(v)
	}
	switch m.Kind {
	case state.StringExact:
		return s == v
	case state.StringPrefix:
		return strings.HasPrefix(s, v)
	case state.StringSuffix:
		return strings.HasSuffix(s, v)
	case state.StringContains:
		return strings.Contains(s, v)
	case state.StringRegex:
		// The decoder anchors the pattern (state.StringMatcher.Regex).
		return m.Regex != nil && m.Regex.MatchString(s)
	}
	return false
}

// checkDepth accepts when some chain is within max (Go may find several
// paths to the roots; a short one suffices, as in BoringSSL's search).
func checkDepth(chains [][]*x509.Certificate, limit *uint32) error {
	if limit == nil {
		return nil
	}
	shortest := -1
	for _, c := range chains {
		if d := len(c) - 1; shortest < 0 || d < shortest {
			shortest = d
		}
	}
	if shortest >= 0 && uint64(shortest) <= uint64(*limit) {
		return nil
	}
	return fmt.Errorf("peer certificate: chain of depth %d exceeds max_verify_depth %d", shortest, *limit)
}
