//lint:file-ignore SA1019 deprecated Envoy fields are still sent by control planes and must be honoured, not ignored.

package resource

import (
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshlet/meshlet/state"
)

const (
	transportSocketTLS       = "envoy.transport_sockets.tls"
	transportSocketRawBuffer = "envoy.transport_sockets.raw_buffer"
	typeDownstreamTLS        = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	typeUpstreamTLS          = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
	typeRawBuffer            = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"
)

// transportSocketKind classifies a TransportSocket as plain (nil or raw
// buffer) or TLS with the expected context type; anything else is rejected
// because we would otherwise send plaintext where the config asked for some
// other wrapping.
func transportSocketTLSConfig(ts *corev3.TransportSocket, wantType string) (isTLS bool, err error) {
	if ts == nil {
		return false, nil
	}
	tc := ts.GetTypedConfig()
	if tc == nil {
		switch ts.GetName() {
		case transportSocketRawBuffer, "raw_buffer":
			return false, nil
		}
		return false, errAt("typed_config", "is required (transport socket %q)", ts.GetName())
	}
	switch tc.GetTypeUrl() {
	case typeRawBuffer:
		return false, nil
	case wantType:
		return true, nil
	}
	return false, errAt("typed_config", "transport socket %q (%s) is not supported", ts.GetName(), tc.GetTypeUrl())
}

// decodeDownstreamTLS decodes a filter chain's transport_socket; nil means
// plaintext.
func decodeDownstreamTLS(ts *corev3.TransportSocket) (*state.DownstreamTLS, error) {
	isTLS, err := transportSocketTLSConfig(ts, typeDownstreamTLS)
	if err != nil || !isTLS {
		return nil, err
	}
	var ctx tlsv3.DownstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
		return nil, errAt("typed_config", "%v", err)
	}
	out := &state.DownstreamTLS{}
	if err := at("typed_config", func() error {
		if ctx.GetRequireSni().GetValue() {
			return errAt("require_sni", "is not supported")
		}
		if ctx.GetSessionTicketKeysType() != nil {
			return errors.New("session_ticket_keys are not supported")
		}
		common := ctx.GetCommonTlsContext()
		if common == nil {
			return errAt("common_tls_context", "is required")
		}
		cert, key, sdsCert, err := tlsCertificate(common)
		if err != nil {
			return at("common_tls_context", err)
		}
		if cert == nil && sdsCert == "" {
			return errAt("common_tls_context.tls_certificates", "a certificate is required to terminate TLS")
		}
		out.CertChainPEM, out.KeyPEM = cert, key
		out.ALPN = common.GetAlpnProtocols()
		if out.Params, err = decodeTLSParams(common.GetTlsParams()); err != nil {
			return at("common_tls_context.tls_params", err)
		}
		v, err := trustedCA(common)
		if err != nil {
			return at("common_tls_context", err)
		}
		if v.system {
			return errAt("common_tls_context.validation_context.system_root_certs", "is for upstream contexts only")
		}
		ca, sdsCA := v.ca, v.sds
		out.ClientCAPEM = ca
		out.Params.MaxVerifyDepth = v.depth
		out.SANMatchers = v.sans
		if len(v.sans) > 0 && ca == nil && sdsCA == "" {
			return errAt("common_tls_context.validation_context", "subject alt name matchers need trusted_ca or an SDS validation context")
		}
		out.SDS = state.SDSRef{Certificate: sdsCert, Validation: sdsCA}
		if out.SDS.Agent, err = sdsFromAgent(common); err != nil {
			return at("common_tls_context", err)
		}
		out.RequireClientCert = ctx.GetRequireClientCertificate().GetValue()
		if out.RequireClientCert && ca == nil && sdsCA == "" {
			return errAt("require_client_certificate", "needs common_tls_context.validation_context.trusted_ca or an SDS validation context")
		}
		return nil
	}()); err != nil {
		return nil, err
	}
	return out, nil
}

// decodeUpstreamTLS decodes a cluster's transport_socket; nil means
// plaintext.
func decodeUpstreamTLS(ts *corev3.TransportSocket) (*state.UpstreamTLS, error) {
	// TLS inside internal_upstream runs inside the HBONE tunnel (hbone_istio.go).
	ts, err := unwrapInternalUpstream(ts)
	if err != nil {
		return nil, err
	}
	isTLS, err := transportSocketTLSConfig(ts, typeUpstreamTLS)
	if err != nil || !isTLS {
		return nil, err
	}
	var ctx tlsv3.UpstreamTlsContext
	if err := ts.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
		return nil, errAt("typed_config", "%v", err)
	}
	out := &state.UpstreamTLS{SNI: ctx.GetSni()}
	if err := at("typed_config", func() error {
		if ctx.GetAutoHostSni() || ctx.GetAutoSniSanValidation() {
			return errAt("auto_host_sni", "is not supported")
		}
		common := ctx.GetCommonTlsContext()
		if common == nil {
			return nil
		}
		cert, key, sdsCert, err := tlsCertificate(common)
		if err != nil {
			return at("common_tls_context", err)
		}
		out.CertChainPEM, out.KeyPEM = cert, key
		out.ALPN = common.GetAlpnProtocols()
		if out.Params, err = decodeTLSParams(common.GetTlsParams()); err != nil {
			return at("common_tls_context.tls_params", err)
		}
		v, err := trustedCA(common)
		if err != nil {
			return at("common_tls_context", err)
		}
		ca, sdsCA := v.ca, v.sds
		out.RootCAPEM = ca
		out.Params.MaxVerifyDepth = v.depth
		out.SANMatchers = v.sans
		// gRFC A82: system roots replace the mesh CA for this cluster.
		out.SystemRoots = v.system && ca == nil && sdsCA == ""
		if len(v.sans) > 0 && ca == nil && sdsCA == "" && !v.system {
			return errAt("common_tls_context.validation_context", "subject alt name matchers need trusted_ca, system_root_certs or an SDS validation context")
		}
		out.SDS = state.SDSRef{Certificate: sdsCert, Validation: sdsCA}
		if out.SDS.Agent, err = sdsFromAgent(common); err != nil {
			return at("common_tls_context", err)
		}
		return nil
	}()); err != nil {
		return nil, err
	}
	return out, nil
}

// tlsCertificate returns the single static certificate of a context, or the
// name of the SDS secret that supplies it (neither when there is none).
// Certificate providers are rejected: ignoring them would serve no
// certificate at all.
func tlsCertificate(c *tlsv3.CommonTlsContext) (cert, key []byte, sdsName string, err error) {
	if sds := c.GetTlsCertificateSdsSecretConfigs(); len(sds) > 0 {
		if len(sds) > 1 {
			return nil, nil, "", errAt("tls_certificate_sds_secret_configs", "only one secret is supported, got %d", len(sds))
		}
		if len(c.GetTlsCertificates()) > 0 {
			return nil, nil, "", errAt("tls_certificate_sds_secret_configs", "cannot be combined with tls_certificates")
		}
		name, err := sdsSecretName(sds[0])
		if err != nil {
			return nil, nil, "", at("tls_certificate_sds_secret_configs[0]", err)
		}
		return nil, nil, name, nil
	}
	if c.GetTlsCertificateProviderInstance() != nil || c.GetTlsCertificateCertificateProvider() != nil ||
		c.GetTlsCertificateCertificateProviderInstance() != nil || c.GetCustomTlsCertificateSelector() != nil {
		return nil, nil, "", errors.New("certificate providers are not supported")
	}
	certs := c.GetTlsCertificates()
	switch len(certs) {
	case 0:
		return nil, nil, "", nil
	case 1:
	default:
		return nil, nil, "", errAt("tls_certificates", "only one certificate is supported, got %d", len(certs))
	}
	tc := certs[0]
	if tc.GetPrivateKeyProvider() != nil {
		return nil, nil, "", errAt("tls_certificates[0].private_key_provider", "is not supported")
	}
	cert, err = dataSource(tc.GetCertificateChain())
	if err != nil {
		return nil, nil, "", at("tls_certificates[0].certificate_chain", err)
	}
	key, err = dataSource(tc.GetPrivateKey())
	if err != nil {
		return nil, nil, "", at("tls_certificates[0].private_key", err)
	}
	return cert, key, "", nil
}

// validation is what a context's validation settings decode to.
type validation struct {
	ca     []byte // static trusted_ca
	sds    string // SDS secret supplying the trust bundle
	sans   []state.SANMatcher
	system bool    // system_root_certs
	depth  *uint32 // max_verify_depth
}

// trustedCA returns validation_context (or the combined context's default
// one, whose SAN matchers apply on top of the SDS bundle as Istio uses
// it), or the name of the SDS secret that supplies the trust bundle.
// Validation knobs we cannot enforce (pins, CRLs) are rejected rather than
// ignored: ignoring them would accept peers the config meant to refuse.
func trustedCA(c *tlsv3.CommonTlsContext) (validation, error) {
	var v validation
	var vc *tlsv3.CertificateValidationContext
	path := "validation_context"
	switch t := c.GetValidationContextType().(type) {
	case nil:
		return v, nil
	case *tlsv3.CommonTlsContext_ValidationContext:
		vc = t.ValidationContext
	case *tlsv3.CommonTlsContext_CombinedValidationContext:
		if sds := t.CombinedValidationContext.GetValidationContextSdsSecretConfig(); sds != nil {
			name, err := sdsSecretName(sds)
			if err != nil {
				return v, at("combined_validation_context.validation_context_sds_secret_config", err)
			}
			v.sds = name
		}
		vc = t.CombinedValidationContext.GetDefaultValidationContext()
		path = "combined_validation_context.default_validation_context"
	case *tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig:
		name, err := sdsSecretName(t.ValidationContextSdsSecretConfig)
		if err != nil {
			return v, at("validation_context_sds_secret_config", err)
		}
		v.sds = name
		return v, nil
	default:
		return v, fmt.Errorf("validation context %T is not supported", t)
	}
	if vc == nil {
		return v, nil
	}
	ca, err := validationContextBase(vc)
	if err != nil {
		return v, at(path, err)
	}
	if ca != nil && v.sds != "" {
		return v, errAt(path+".trusted_ca", "cannot be combined with validation_context_sds_secret_config")
	}
	v.ca = ca
	if v.sans, err = decodeSANMatchers(vc); err != nil {
		return v, at(path, err)
	}
	v.system = vc.GetSystemRootCerts() != nil
	if d := vc.GetMaxVerifyDepth(); d != nil {
		depth := d.GetValue()
		v.depth = &depth
	}
	if v.system && ca != nil {
		return v, errAt(path+".system_root_certs", "cannot be combined with trusted_ca")
	}
	return v, nil
}

// validationContextCA returns the trusted_ca of a validation context
// delivered as an SDS secret (nil when unset). Such a secret only supplies
// the trust bundle here, so name matching and system roots in it are
// rejected: ignoring them would accept peers the secret meant to refuse.
func validationContextCA(vc *tlsv3.CertificateValidationContext) ([]byte, error) {
	switch {
	case len(vc.GetMatchSubjectAltNames()) > 0:
		return nil, errAt("match_subject_alt_names", "is not supported")
	case len(vc.GetMatchTypedSubjectAltNames()) > 0:
		return nil, errAt("match_typed_subject_alt_names", "is not supported")
	case vc.GetSystemRootCerts() != nil:
		return nil, errAt("system_root_certs", "is not supported in an SDS secret")
	}
	return validationContextBase(vc)
}

// validationContextBase returns a validation context's trusted_ca (nil
// when unset), rejecting the knobs we cannot enforce.
func validationContextBase(vc *tlsv3.CertificateValidationContext) ([]byte, error) {
	unsupported := map[string]bool{
		"verify_certificate_spki":          len(vc.GetVerifyCertificateSpki()) > 0,
		"verify_certificate_hash":          len(vc.GetVerifyCertificateHash()) > 0,
		"crl":                              vc.GetCrl() != nil,
		"custom_validator_config":          vc.GetCustomValidatorConfig() != nil,
		"ca_certificate_provider_instance": vc.GetCaCertificateProviderInstance() != nil,
	}
	for _, f := range []string{"verify_certificate_spki", "verify_certificate_hash", "crl", "custom_validator_config", "ca_certificate_provider_instance"} {
		if unsupported[f] {
			return nil, errAt(f, "is not supported")
		}
	}
	if vc.GetTrustChainVerification() == tlsv3.CertificateValidationContext_ACCEPT_UNTRUSTED {
		return nil, errAt("trust_chain_verification", "ACCEPT_UNTRUSTED is not supported")
	}
	if vc.GetTrustedCa() == nil {
		return nil, nil
	}
	ca, err := dataSource(vc.GetTrustedCa())
	if err != nil {
		return nil, at("trusted_ca", err)
	}
	return ca, nil
}
