// Package meshlet embeds the mesh data plane in a Go program: no sidecar,
// no proxy hop. A Server consumes the same xDS configuration as the
// ztunnel binary (a bootstrap file and/or an ADS server) and offers
//
//   - RoundTripper: an http.RoundTripper that runs the HTTP data path in
//     process: route selection, weighted clusters, load balancing, retries,
//     timeouts, faults, mirroring, header rewrites, auto_host_rewrite, GCP
//     authn token injection, and mTLS to upstreams from the cluster TLS
//     contexts with the workload identity;
//   - Dial: TCP to "service.ns.svc:port" through that service's cluster
//     (load balancing, TLS or HBONE as the cluster says);
//   - Listen: a net.Listener that terminates inbound mTLS with the workload
//     identity and applies the network RBAC filters of a named listener;
//   - ListenHBONE: a net.Listener of HBONE (HTTP/2 CONNECT in mTLS) streams
//     with the same RBAC; PeerIdentity gives a connection's peer SPIFFE ID.
//
// Like tailscale's tsnet.Server, a Server is configured by setting its
// exported fields and starts on first use (Start, or the first request,
// Dial or Listen). The fields are read once, at that moment; later changes
// have no effect, and Start reports them with ErrFrozen.
//
// The package is wiring only: it shares config, xds, state, lb, policy,
// identity, hbone, dataplane/upstream and dataplane/httpproxy with the
// proxy (and internal/wiring with cmd/ztunnel), never copies of them.
// Listeners in the configuration are read as configuration; the library
// never binds their sockets. Nothing here may be imported by those
// packages.
package meshlet
