// Package echo runs small versioned backends for the demo and for tests:
// an HTTP server (HTTP/1.1 and prior-knowledge h2c on one port) that
// describes each request back as JSON, and a gRPC server with
// grpc.health.v1.Health only. Every response carries the backend's
// version ("x-echo-version" header or header metadata) so a caller can tell
// which backend a proxy picked. The HTTP server also reports the
// x-envoy-attempt-count it received ("x-echo-attempt-count") and counts its
// requests by host and attempt (Server.Stats), so a demo can show what a
// retry policy or a mirror did from the backend's side.
//
// echo listens on loopback only and imports no meshlet package. It is
// linked into cmd/ztunnel, so it must not import test-only packages such as
// google.golang.org/grpc/interop (oauth2 credentials, large descriptors).
package echo
