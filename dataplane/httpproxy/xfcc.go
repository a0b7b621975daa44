package httpproxy

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"strings"

	"github.com/meshlet/meshlet/state"
)

// x-forwarded-client-cert (XFCC): which client certificates a request
// passed through. Envoy's connection manager sanitizes, forwards, appends
// to or replaces it under forward_client_cert_details; applications behind
// an Istio sidecar read the caller's identity from it.
const (
	headerXFCC      = "x-forwarded-client-cert"
	canonHeaderXFCC = "X-Forwarded-Client-Cert"
)

// xfccAct is what a connection does to the incoming header.
type xfccAct uint8

const (
	// xfccRemove is the zero value: SANITIZE, the safe default, and every
	// mode but ALWAYS_FORWARD_ONLY on a connection without a client
	// certificate.
	xfccRemove xfccAct = iota
	xfccKeep
	xfccAppend
	xfccSet
)

// xfccPlan is the XFCC treatment of one downstream connection. Everything
// it depends on (the connection manager and the TLS session) is fixed for
// the connection, so it is built once and each request only applies it.
type xfccPlan struct {
	act xfccAct
	// elem is this hop's element under xfccAppend and xfccSet.
	elem string
}

// planXFCC decides the treatment of connections described by info under
// hcm. Like Envoy, a downstream counts as mTLS when it presented a client
// certificate; the TLS config decides whether an unverified one is
// accepted at all.
func planXFCC(hcm *state.HTTPConnectionManager, info *ConnInfo) xfccPlan {
	mode := hcm.ForwardClientCert
	if mode == state.ForwardClientCertAlwaysForwardOnly {
		return xfccPlan{act: xfccKeep}
	}
	if mode == state.ForwardClientCertSanitize || info == nil || info.TLS == nil || len(info.TLS.PeerCertificates) == 0 {
		return xfccPlan{act: xfccRemove}
	}
	switch mode {
	case state.ForwardClientCertAppendForward:
		return xfccPlan{act: xfccAppend, elem: xfccElement(hcm.ClientCertDetails, info.LocalURISANs, info.TLS.PeerCertificates)}
	case state.ForwardClientCertSanitizeSet:
		return xfccPlan{act: xfccSet, elem: xfccElement(hcm.ClientCertDetails, info.LocalURISANs, info.TLS.PeerCertificates)}
	}
	return xfccPlan{act: xfccKeep} // FORWARD_ONLY over mTLS
}

// xfccElement builds one XFCC element in Envoy's key order: By (one per URI
// SAN of the proxy's own certificate), Hash, then Cert, Chain, Subject, URI
// and DNS as details asks. Subject and URI appear even when empty, as
// Envoy writes them; Cert and Chain are URL-encoded PEM. chain is the
// peer's certificates, leaf first.
func xfccElement(details state.ClientCertDetails, local []string, chain []*x509.Certificate) string {
	leaf := chain[0]
	var b strings.Builder
	sep := func() {
		if b.Len() > 0 {
			b.WriteByte(';')
		}
	}
	for _, by := range local {
		sep()
		b.WriteString("By=")
		writeXFCCValue(&b, by)
	}
	sum := sha256.Sum256(leaf.Raw)
	sep()
	b.WriteString("Hash=")
	b.WriteString(hex.EncodeToString(sum[:]))
	if details.Cert {
		sep()
		b.WriteString(`Cert="`)
		writePEMURLEncoded(&b, leaf)
		b.WriteByte('"')
	}
	if details.Chain {
		sep()
		b.WriteString(`Chain="`)
		for _, c := range chain {
			writePEMURLEncoded(&b, c)
		}
		b.WriteByte('"')
	}
	if details.Subject {
		// pkix.Name.String is the RFC 2253 form Envoy prints, with ,+"\<>;
		// already backslash-escaped, so it can go between quotes as is.
		sep()
		b.WriteString(`Subject="`)
		b.WriteString(leaf.Subject.String())
		b.WriteByte('"')
	}
	if details.URI {
		if len(leaf.URIs) == 0 {
			sep()
			b.WriteString("URI=")
		}
		for _, u := range leaf.URIs {
			sep()
			b.WriteString("URI=")
			writeXFCCValue(&b, u.String())
		}
	}
	if details.DNS {
		for _, d := range leaf.DNSNames {
			sep()
			b.WriteString("DNS=")
			writeXFCCValue(&b, d)
		}
	}
	return b.String()
}

// writeXFCCValue writes v, double-quoted when it holds a character that
// separates elements (,), pairs (;) or key from value (=), or a quote; a
// quote or backslash inside is then escaped with a backslash, so parsers
// following Envoy's header description split it correctly.
func writeXFCCValue(b *strings.Builder, v string) {
	if !strings.ContainsAny(v, `,;="`) {
		b.WriteString(v)
		return
	}
	b.WriteByte('"')
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v[i])
	}
	b.WriteByte('"')
}

// writePEMURLEncoded writes c as PEM, percent-encoding every byte outside
// RFC 3986's unreserved set (newlines, spaces, '+', '/', '=').
func writePEMURLEncoded(b *strings.Builder, c *x509.Certificate) {
	const hexDigits = "0123456789ABCDEF"
	for _, ch := range pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}) {
		if 'A' <= ch && ch <= 'Z' || 'a' <= ch && ch <= 'z' || '0' <= ch && ch <= '9' ||
			ch == '-' || ch == '.' || ch == '_' || ch == '~' {
			b.WriteByte(ch)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[ch>>4])
		b.WriteByte(hexDigits[ch&0xf])
	}
}

// appendXFCCValue is the value AppendForward sends: the incoming value,
// a comma, this hop's element (just the element when nothing came in).
func appendXFCCValue(prev, elem string) string {
	if strings.TrimSpace(prev) == "" {
		return elem
	}
	return prev + "," + elem
}
