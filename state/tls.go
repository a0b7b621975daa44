package state

import "crypto/tls"

// SANType mirrors SubjectAltNameMatcher.SanType. SANAny is the deprecated
// match_subject_alt_names form, which matches a name of any type.
type SANType int

const (
	SANAny SANType = iota
	SANDNS
	SANURI
	SANEmail
	SANIP
)

// SANMatcher is one entry of CertificateValidationContext's
// match_typed_subject_alt_names (or match_subject_alt_names): a peer is
// accepted when any of its SANs of Type matches Match. A DNS SAN with a
// leading wildcard label matches an exact matcher as Envoy does.
type SANMatcher struct {
	Type  SANType
	Match StringMatcher
}

// TLSParams are common_tls_context.tls_params. Versions and suites use
// crypto/tls's constants; zero values take the defaults (TLS 1.2 to 1.3,
// Go's suite selection).
type TLSParams struct {
	MinVersion, MaxVersion uint16
	// CipherSuites applies to TLS 1.2 only (Go does not make TLS 1.3
	// suites configurable).
	CipherSuites []uint16
	// Curves is ecdh_curves (crypto/tls.CurveID values; nil = Go's
	// defaults).
	Curves []tls.CurveID
	// MaxVerifyDepth is the validation context's max_verify_depth, carried
	// here so both directions apply it like the other parameters: a
	// verified chain may hold at most this many certificates above the
	// leaf, the trust anchor included (nil = no limit).
	MaxVerifyDepth *uint32
}

// TransportSocketMatch is one of a cluster's transport_socket_matches: an
// endpoint whose metadata filter_metadata["envoy.transport_socket_match"]
// holds every key/value of Match uses TLS (nil TLS means plaintext).
type TransportSocketMatch struct {
	Name  string
	Match map[string]string
	TLS   *UpstreamTLS
}

// TransportSocketMatchKey is the metadata filter Envoy matches
// transport_socket_matches against.
const TransportSocketMatchKey = "envoy.transport_socket_match"
