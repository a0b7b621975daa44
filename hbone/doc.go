// Package hbone implements HBONE, Istio ambient's tunnel: TCP connections
// carried as HTTP/2 CONNECT streams inside mutual TLS (TLS 1.3) between
// SPIFFE identities, on port 15008.
//
// It owns the tunnel server (accept, peer identity check, CONNECT handling,
// delivery to a local destination through a Dialer hook, drain with
// GOAWAY), the client pool (one mTLS HTTP/2 connection per source identity,
// destination identity and destination address, many streams each; GOAWAY
// honoured, unprocessed streams retried once), and the metadata headers ztunnel
// reads and writes on the CONNECT request (forwarded, baggage, traceparent).
// HTTP/2 is its own CONNECT-only implementation (mux.go, stream.go) on
// x/net's framer and HPACK, so that a tunnel half-closes like TCP in both
// directions and bytes are copied as little as possible. It also resolves
// Istio's HBONE origination configuration (internal listener +
// tunneling_config, istio.go) from the state snapshot per dial.
//
// hbone imports identity (certificate sources), state (the configuration
// snapshot) and the standard library with golang.org/x/net/http2. It must not import dataplane, xds, config or cmd:
// the data plane reaches it through small interfaces (dataplane/upstream's
// tunnel dialer), and cmd wires it.
package hbone
