package dataplane

import (
	"crypto/tls"
	"crypto/x509"
	"sync/atomic"

	"github.com/meshlet/meshlet/state"
)

// localURIs caches the URI SANs of the certificate a TLS filter chain
// presents: the "By" of the x-forwarded-client-cert element its connection
// manager adds. The certificate is static or comes from SDS and rotates;
// the cache is keyed by the *tls.Certificate (SDS sources hand out the
// same pointer until the secret changes), so the next connection after a
// rotation sees the new one and the rest parse nothing.
type localURIs struct {
	cur atomic.Pointer[localURIsEntry]
}

type localURIsEntry struct {
	cert *tls.Certificate
	uris []string
}

// get returns the URI SANs of the certificate cfg presents now, nil when
// there is none. A rotation between the handshake and this call cannot
// change the answer in practice: rotation keeps the workload identity.
func (c *localURIs) get(cfg *tls.Config) []string {
	var cert *tls.Certificate
	switch {
	case len(cfg.Certificates) > 0:
		cert = &cfg.Certificates[0]
	case cfg.GetCertificate != nil:
		// Our GetCertificate (tls.go) ignores the hello: it reads SDS.
		cert, _ = cfg.GetCertificate(&tls.ClientHelloInfo{})
	}
	if cert == nil || len(cert.Certificate) == 0 {
		return nil
	}
	if e := c.cur.Load(); e != nil && e.cert == cert {
		return e.uris
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil
		}
	}
	var uris []string
	for _, u := range leaf.URIs {
		uris = append(uris, u.String())
	}
	c.cur.Store(&localURIsEntry{cert: cert, uris: uris})
	return uris
}

// needsLocalURIs reports whether hcm writes this hop's XFCC element, which
// names the local certificate.
func needsLocalURIs(hcm *state.HTTPConnectionManager) bool {
	return hcm != nil && (hcm.ForwardClientCert == state.ForwardClientCertAppendForward ||
		hcm.ForwardClientCert == state.ForwardClientCertSanitizeSet)
}
