package identity

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// ControlPlaneTLS says how a proxy or agent verifies (and authenticates
// to) its control plane, e.g. istiod on 15012.
type ControlPlaneTLS struct {
	// Roots verify the control plane's certificate; nil means the
	// workload trust bundle from the Source (istiod's serving certificate
	// is issued by the mesh CA).
	Roots *x509.CertPool
	// ServerName is checked against the control plane's certificate;
	// default: the host of the address.
	ServerName string
	// ClientCert presents the workload certificate (mTLS), which is how
	// istiod authenticates a proxy that has no token.
	ClientCert bool
}

// ControlPlaneConfig builds the client TLS config towards the control
// plane at address. Without fixed roots the trust bundle is read from src
// on every handshake, so a bundle rotation needs no restart.
func ControlPlaneConfig(address string, o ControlPlaneTLS, src Source) (*tls.Config, error) {
	name := o.ServerName
	if name == "" {
		host, _, err := net.SplitHostPort(address)
		if err != nil {
			host = address
		}
		name = host
	}
	tc := &tls.Config{ServerName: name, MinVersion: tls.VersionTLS12}
	if o.ClientCert {
		if src == nil {
			return nil, errors.New("control plane mTLS needs a workload certificate source")
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return src.Certificate() }
	}
	if o.Roots != nil {
		tc.RootCAs = o.Roots
		return tc, nil
	}
	if src == nil {
		return nil, errors.New("control plane TLS without roots needs a workload certificate source for the trust bundle")
	}
	// Verification is done below against the current bundle instead of a
	// RootCAs fixed now.
	tc.InsecureSkipVerify = true
	tc.VerifyConnection = func(cs tls.ConnectionState) error {
		roots, err := src.Roots()
		if err != nil {
			return err
		}
		if len(cs.PeerCertificates) == 0 {
			return errors.New("control plane sent no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err = cs.PeerCertificates[0].Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, DNSName: name,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			return fmt.Errorf("control plane certificate: %w", err)
		}
		return nil
	}
	return tc, nil
}

// TokenFile is gRPC per-RPC credentials sending the bearer token in a file
// (Istio's projected service account token, /var/run/secrets/tokens/
// istio-token) as "authorization: Bearer ...". The file is read on every
// stream, so a rotated token is picked up; it requires a secure transport.
type TokenFile string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (f TokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	return map[string]string{"authorization": "Bearer " + strings.TrimSpace(string(tok))}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (TokenFile) RequireTransportSecurity() bool { return true }
