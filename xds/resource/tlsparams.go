//lint:file-ignore SA1019 deprecated match_subject_alt_names is still sent by control planes and must be honoured, not ignored.

package resource

import (
	"crypto/tls"
	"fmt"
	"strings"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshlet/meshlet/state"
)

// decodeTLSParams maps common_tls_context.tls_params onto crypto/tls.
// Knobs Go cannot honour are rejected rather than ignored.
func decodeTLSParams(p *tlsv3.TlsParameters) (state.TLSParams, error) {
	var out state.TLSParams
	if p == nil {
		return out, nil
	}
	var err error
	if out.MinVersion, err = tlsVersion(p.GetTlsMinimumProtocolVersion()); err != nil {
		return out, at("tls_minimum_protocol_version", err)
	}
	if out.MaxVersion, err = tlsVersion(p.GetTlsMaximumProtocolVersion()); err != nil {
		return out, at("tls_maximum_protocol_version", err)
	}
	if out.MinVersion != 0 && out.MaxVersion != 0 && out.MinVersion > out.MaxVersion {
		return out, errAt("tls_minimum_protocol_version", "is above tls_maximum_protocol_version")
	}
	for i, name := range p.GetCipherSuites() {
		// "[A|B]" is BoringSSL's equal-preference group; Go orders
		// suites itself, so a group is just its members.
		for _, n := range strings.Split(strings.Trim(name, "[]"), "|") {
			id, ok := cipherSuiteIDs[n]
			if !ok {
				return out, errAt("cipher_suites", "[%d] %q is not a TLS 1.2 suite Go supports", i, n)
			}
			out.CipherSuites = append(out.CipherSuites, id)
		}
	}
	for i, name := range p.GetEcdhCurves() {
		id, ok := curveIDs[name]
		if !ok {
			return out, errAt("ecdh_curves", "[%d] %q is not a curve Go supports", i, name)
		}
		out.Curves = append(out.Curves, id)
	}
	if len(p.GetSignatureAlgorithms()) > 0 {
		return out, errAt("signature_algorithms", "are not supported")
	}
	if len(p.GetCompliancePolicies()) > 0 {
		return out, errAt("compliance_policies", "are not supported")
	}
	return out, nil
}

func tlsVersion(v tlsv3.TlsParameters_TlsProtocol) (uint16, error) {
	switch v {
	case tlsv3.TlsParameters_TLS_AUTO:
		return 0, nil
	case tlsv3.TlsParameters_TLSv1_0:
		return tls.VersionTLS10, nil
	case tlsv3.TlsParameters_TLSv1_1:
		return tls.VersionTLS11, nil
	case tlsv3.TlsParameters_TLSv1_2:
		return tls.VersionTLS12, nil
	case tlsv3.TlsParameters_TLSv1_3:
		return tls.VersionTLS13, nil
	}
	return 0, fmt.Errorf("unknown version %v", v)
}

// cipherSuiteIDs maps the OpenSSL/BoringSSL names Envoy accepts to Go's
// TLS 1.2 suites (TLS 1.3 suites are not configurable in either).
var cipherSuiteIDs = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                    tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                    tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// curveIDs maps the BoringSSL curve names Envoy accepts (with their
// OpenSSL aliases) to the key exchanges crypto/tls implements.
var curveIDs = map[string]tls.CurveID{
	"X25519":         tls.X25519,
	"P-256":          tls.CurveP256,
	"prime256v1":     tls.CurveP256,
	"secp256r1":      tls.CurveP256,
	"P-384":          tls.CurveP384,
	"secp384r1":      tls.CurveP384,
	"P-521":          tls.CurveP521,
	"secp521r1":      tls.CurveP521,
	"X25519MLKEM768": tls.X25519MLKEM768,
}

// decodeSANMatchers reads match_typed_subject_alt_names and the deprecated
// match_subject_alt_names (which matches a name of any type).
func decodeSANMatchers(vc *tlsv3.CertificateValidationContext) ([]state.SANMatcher, error) {
	var out []state.SANMatcher
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		var t state.SANType
		switch m.GetSanType() {
		case tlsv3.SubjectAltNameMatcher_DNS:
			t = state.SANDNS
		case tlsv3.SubjectAltNameMatcher_URI:
			t = state.SANURI
		case tlsv3.SubjectAltNameMatcher_EMAIL:
			t = state.SANEmail
		case tlsv3.SubjectAltNameMatcher_IP_ADDRESS:
			t = state.SANIP
		default:
			return nil, errAt("match_typed_subject_alt_names", "[%d].san_type %v is not supported", i, m.GetSanType())
		}
		if m.GetMatcher() == nil {
			return nil, errAt("match_typed_subject_alt_names", "[%d].matcher is required", i)
		}
		sm, err := decodeStringMatcher(m.GetMatcher())
		if err != nil {
			return nil, at("match_typed_subject_alt_names", at("matcher", err))
		}
		out = append(out, state.SANMatcher{Type: t, Match: sm})
	}
	for _, m := range vc.GetMatchSubjectAltNames() {
		sm, err := decodeStringMatcher(m)
		if err != nil {
			return nil, at("match_subject_alt_names", err)
		}
		out = append(out, state.SANMatcher{Type: state.SANAny, Match: sm})
	}
	return out, nil
}
