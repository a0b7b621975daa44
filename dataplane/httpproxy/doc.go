// Package httpproxy owns the HTTP connection manager: downstream HTTP/1.1
// (its own strict codec on the hot path), HTTP/2 and h2c (x/net/http2),
// gRPC, route selection through policy, cluster choice, lb picks and the
// upstream HTTP/1.1 and HTTP/2 connection pools kept in upstream.Endpoint
// slots. It writes Envoy response flags (NR, NC, UH, UF, UR, UC, UT, DC).
//
// httpproxy imports state, lb, policy and dataplane/upstream.
package httpproxy
