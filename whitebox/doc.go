// Package whitebox is meshlet's capture mode for places without root or
// iptables (gVisor-like sandboxes, plain Docker, dev machines): an HTTP
// proxy (default 127.0.0.1:15007) for applications that honour
// HTTP_PROXY/HTTPS_PROXY, and localhost port forwards for plain TCP
// clients. Each connection or request is handed to the data plane as if it
// had been captured with the destination the client named, so it is routed
// exactly like captured traffic (listener, filter chain, routes, retries).
//
// Files: proxy.go (the HTTP proxy: absolute-form requests and CONNECT),
// forward.go (port forwards), resolve.go (destination name -> address, mesh
// config first, then DNS), pair.go (loopback socket pairs), server.go
// (lifecycle).
//
// whitebox imports state only; the data plane is reached through the
// Dataplane interface, which *dataplane.Server satisfies. Nothing below
// cmd/ imports whitebox.
package whitebox
