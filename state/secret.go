package state

// Istio's names for the two secrets a workload uses: its own certificate
// and the mesh trust bundle.
const (
	SecretDefault = "default"
	SecretRootCA  = "ROOTCA"
)

// Secret is a decoded SDS Secret resource
// (envoy.extensions.transport_sockets.tls.v3.Secret): a certificate with
// its key, a trust bundle, or both (Envoy allows one per resource; Istio
// sends "default" with tls_certificate and "ROOTCA" with
// validation_context).
type Secret struct {
	Name string
	// CertChainPEM and KeyPEM are tls_certificate's chain and key (both
	// set or both empty).
	CertChainPEM []byte
	KeyPEM       []byte
	// TrustedCAPEM is validation_context.trusted_ca.
	TrustedCAPEM []byte
	// MaxVerifyDepth is validation_context.max_verify_depth (nil: unset).
	// It travels with the bundle, so a rotation may change it; when set it
	// overrides the referencing context's own (Envoy merges the secret's
	// validation context over the combined context's default).
	MaxVerifyDepth *uint32
}

// SDSRef names the SDS secrets a TLS context takes its certificate and
// trust bundle from, resolved at handshake time (the dataplane asks an
// identity.Source for them) so a rotation needs no listener or cluster
// update. An empty name means that part is not SDS-delivered.
type SDSRef struct {
	// Certificate is tls_certificate_sds_secret_configs[0].name.
	Certificate string
	// Validation is validation_context_sds_secret_config.name (or the
	// combined validation context's).
	Validation string
	// Agent is set when the sds_config points somewhere other than the ADS
	// stream, as Istio's does (the "sds-grpc" cluster: pilot-agent on a
	// Unix socket). Those names are served by the local identity.Source,
	// so the xDS client does not subscribe to them.
	Agent bool
}

// IsZero reports whether neither part comes from SDS.
func (r SDSRef) IsZero() bool { return r == SDSRef{} }
