// Package identity owns workload identity: SPIFFE IDs
// (spiffe://TRUST_DOMAIN/ns/NS/sa/SA), the certificate Sources behind one
// interface, their rotation, and the tls.Config builders that present those
// certificates and verify peers by SPIFFE ID.
//
// Sources:
//   - SDSSource / SourceForSDS: SDS secrets the xDS client keeps in the
//     state.Store (Istio's "default" and "ROOTCA").
//   - FileSource: PEM files on disk, polled for change.
//   - CA.Source: the built-in CA (a self-signed ECDSA P-256 root kept in a
//     state directory) issuing short-lived workload certificates.
//   - IstioCAClient.Source: Istio's CA API (istio.v1.auth.
//     IstioCertificateService/CreateCertificate) with a CSR, a bearer token
//     file and ztunnel's ImpersonatedIdentity; CAServer is the in-process
//     counterpart backed by a CA.
//
// Rotating renews at a fraction of the remaining lifetime with jitter;
// handshakes fetch the current certificate each time, so rotation never
// touches open connections.
//
// identity imports state and identity/capb only; dataplane, hbone and cmd
// use it. It must not import xds, dataplane, policy, lb or Envoy protos.
package identity
