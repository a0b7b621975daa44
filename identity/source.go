package identity

import (
	"crypto/tls"
	"crypto/x509"
)

// Source supplies the current certificate and trust bundle of one identity.
// Implementations rotate behind this interface: callers fetch on every
// handshake (tls.Config.GetCertificate / GetClientCertificate /
// VerifyConnection) and never cache, so a rotation needs no reconfiguration.
type Source interface {
	// Certificate returns the current certificate chain and key.
	Certificate() (*tls.Certificate, error)
	// Roots returns the current trust bundle for verifying peers.
	Roots() (*x509.CertPool, error)
}
