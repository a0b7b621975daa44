// Package identity owns workload identity: SPIFFE IDs, certificate sources
// (SDS secrets from xDS, files on disk, a built-in CA, Istio's CSR API),
// rotation, and the tls.Config builders that present those certificates and
// verify peers by SPIFFE ID.
//
// identity imports state only; dataplane, hbone and cmd use it.
package identity
