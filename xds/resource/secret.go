package resource

import (
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshlet/meshlet/state"
)

// DecodeSecret validates an SDS Secret: a tls_certificate (inline or file
// chain and key) or a validation_context (trusted_ca, max_verify_depth). Session ticket keys
// and generic secrets are rejected: nothing here would use them.
func DecodeSecret(m *tlsv3.Secret) (*state.Secret, error) {
	name := m.GetName()
	out := &state.Secret{Name: name}
	err := func() error {
		if name == "" {
			return errAt("name", "is required")
		}
		switch t := m.GetType().(type) {
		case *tlsv3.Secret_TlsCertificate:
			tc := t.TlsCertificate
			if tc.GetPrivateKeyProvider() != nil || tc.GetPkcs12() != nil {
				return errAt("tls_certificate", "only certificate_chain and private_key are supported")
			}
			cert, err := dataSource(tc.GetCertificateChain())
			if err != nil {
				return at("tls_certificate.certificate_chain", err)
			}
			key, err := dataSource(tc.GetPrivateKey())
			if err != nil {
				return at("tls_certificate.private_key", err)
			}
			out.CertChainPEM, out.KeyPEM = cert, key
		case *tlsv3.Secret_ValidationContext:
			ca, err := validationContextCA(t.ValidationContext)
			if err != nil {
				return at("validation_context", err)
			}
			if ca == nil {
				return errAt("validation_context.trusted_ca", "is required")
			}
			out.TrustedCAPEM = ca
			if d := t.ValidationContext.GetMaxVerifyDepth(); d != nil {
				depth := d.GetValue()
				out.MaxVerifyDepth = &depth
			}
		case nil:
			return errors.New("one of tls_certificate or validation_context is required")
		default:
			return fmt.Errorf("secret type %T is not supported", t)
		}
		return nil
	}()
	if err != nil {
		return nil, fmt.Errorf("secret %q: %w", name, err)
	}
	return out, nil
}

// sdsSecretName validates an SdsSecretConfig reference and returns its
// name. Inline secrets (sds_config unset but a name given) and ADS or
// self config sources are served over the ADS stream; any other config
// source is taken to be the local agent (see state.SDSRef.Agent).
func sdsSecretName(c *tlsv3.SdsSecretConfig) (string, error) {
	if c.GetName() == "" {
		return "", errAt("name", "is required")
	}
	return c.GetName(), nil
}

// sdsFromAgent reports whether a context's SDS references point at a
// config source other than ADS. Mixing both in one context is rejected:
// the dataplane resolves a context's secrets in one place.
func sdsFromAgent(c *tlsv3.CommonTlsContext) (bool, error) {
	var configs []*tlsv3.SdsSecretConfig
	configs = append(configs, c.GetTlsCertificateSdsSecretConfigs()...)
	if v := c.GetValidationContextSdsSecretConfig(); v != nil {
		configs = append(configs, v)
	}
	if v := c.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); v != nil {
		configs = append(configs, v)
	}
	ads, agent := false, false
	for _, sc := range configs {
		switch sc.GetSdsConfig().GetConfigSourceSpecifier().(type) {
		case nil, *corev3.ConfigSource_Ads, *corev3.ConfigSource_Self:
			ads = true
		default:
			agent = true
		}
	}
	if ads && agent {
		return false, errors.New("SDS secrets from both ADS and another config source are not supported in one context")
	}
	return agent, nil
}

// SecretReferences returns the names of the SDS secrets a decoded listener
// or cluster needs over ADS (not those served by the local agent),
// deduplicated in first-seen order.
func SecretReferences(value any) []string {
	var refs []state.SDSRef
	switch v := value.(type) {
	case *state.Listener:
		if v == nil {
			return nil
		}
		for _, fc := range append(v.FilterChains[:len(v.FilterChains):len(v.FilterChains)], v.DefaultFilterChain) {
			if fc != nil && fc.TLS != nil {
				refs = append(refs, fc.TLS.SDS)
			}
		}
	case *state.Cluster:
		if v != nil && v.TLS != nil {
			refs = append(refs, v.TLS.SDS)
		}
		if v != nil {
			for _, m := range v.TransportSocketMatches {
				if m.TLS != nil {
					refs = append(refs, m.TLS.SDS)
				}
			}
		}
	}
	var names []string
	seen := map[string]bool{}
	for _, r := range refs {
		if r.Agent {
			continue
		}
		for _, n := range []string{r.Certificate, r.Validation} {
			if n != "" && !seen[n] {
				seen[n] = true
				names = append(names, n)
			}
		}
	}
	return names
}
