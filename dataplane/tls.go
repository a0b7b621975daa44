package dataplane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/state"
)

// identity is what listeners resolve SDS references against: the store's
// secrets and the proxy identity the cluster manager holds
// (upstream.Manager.SetIdentity), so both sides present the same
// certificate.
func (s *Server) identity() upstream.Identity {
	if s.clusters != nil {
		return s.clusters.Identity()
	}
	return upstream.Identity{Store: s.store}
}

// serverTLS builds the crypto/tls config of a DownstreamTlsContext.
// Certificates and trust bundles from SDS are fetched on every handshake,
// so a rotation needs no listener update.
func serverTLS(fc *state.FilterChain, id upstream.Identity) (*tls.Config, error) {
	cfg, err := buildServerTLS(fc, id)
	if err != nil || len(cfg.NextProtos) == 0 {
		return cfg, err
	}
	// crypto/tls fails a handshake whose client offers ALPN values none of
	// which the server lists; Envoy (BoringSSL) selects none and goes on.
	// Istio clients offer "istio-peer-exchange", "istio" to inbound HTTP
	// chains, so mismatch must not be fatal: such a handshake uses a copy
	// without ALPN.
	noALPN := cfg.Clone()
	noALPN.NextProtos = nil
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if len(hello.SupportedProtos) == 0 {
			return nil, nil
		}
		for _, p := range hello.SupportedProtos {
			for _, q := range cfg.NextProtos {
				if p == q {
					return nil, nil
				}
			}
		}
		return noALPN, nil
	}
	return cfg, nil
}

func buildServerTLS(fc *state.FilterChain, id upstream.Identity) (*tls.Config, error) {
	t := fc.TLS
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: t.ALPN,
	}
	upstream.ApplyTLSParams(cfg, t.Params)
	var sds identity.Source
	if !t.SDS.IsZero() {
		if id.Store == nil {
			id.Store = state.NewStore()
		}
		sds = identity.SourceForSDS(id.Store, t.SDS, id.Local)
	}
	switch {
	case t.SDS.Certificate != "":
		cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return sds.Certificate() }
	default:
		cert, err := tls.X509KeyPair(t.CertChainPEM, t.KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("tls_certificates: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	if len(cfg.NextProtos) == 0 && fc.HTTP != nil {
		// Without configured ALPN an HTTP chain offers what its codec can
		// serve, so clients negotiate h2 only where HTTP/2 is served.
		switch fc.HTTP.Codec {
		case state.CodecHTTP1:
			cfg.NextProtos = []string{"http/1.1"}
		case state.CodecHTTP2:
			cfg.NextProtos = []string{"h2"}
		default:
			cfg.NextProtos = []string{"h2", "http/1.1"}
		}
	}
	check := &upstream.PeerCheck{SANs: t.SANMatchers, Usage: x509.ExtKeyUsageClientAuth, Require: t.RequireClientCert, MaxDepth: t.Params.MaxVerifyDepth}
	switch {
	case t.SDS.Validation != "":
		check.Trust = identity.TrustOf(sds) // the secret may carry max_verify_depth
	case len(t.ClientCAPEM) > 0:
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(t.ClientCAPEM) {
			return nil, errors.New("validation_context: no certificates in trusted_ca")
		}
		check.Roots = func() (*x509.CertPool, error) { return pool, nil }
	case len(t.SANMatchers) > 0:
		return nil, errors.New("validation_context: subject alt name matchers need a trusted CA")
	case t.RequireClientCert:
		cfg.ClientAuth = tls.RequireAnyClientCert
		return cfg, nil
	default:
		return cfg, nil
	}
	// Envoy verifies a presented certificate against the trusted CA and
	// demands one only with require_client_certificate. crypto/tls cannot
	// verify against a bundle that rotates, so PeerCheck does it.
	cfg.ClientAuth = tls.RequestClientCert
	if t.RequireClientCert {
		cfg.ClientAuth = tls.RequireAnyClientCert
	}
	cfg.VerifyConnection = check.Verify
	// A resumed session would skip the expiry check of a short-lived
	// client certificate under RequireAnyClientCert; full handshakes it is.
	cfg.SessionTicketsDisabled = true
	return cfg, nil
}

// peerID is the SPIFFE ID of a TLS peer, "" when it presented none (or a
// certificate without a valid SPIFFE URI SAN).
func peerID(cs *tls.ConnectionState) string {
	if cs == nil {
		return ""
	}
	id, err := identity.PeerID(*cs)
	if err != nil {
		return ""
	}
	return id.String()
}
