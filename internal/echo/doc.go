// Package echo runs small versioned backends for the demo and for tests:
// an HTTP server (HTTP/1.1 and prior-knowledge h2c on one port) that
// describes each request back as JSON, and a gRPC server with the interop
// TestService and grpc.health.v1. Every response carries the backend's
// version ("x-echo-version" header or header metadata) so a caller can tell
// which backend a proxy picked.
//
// echo listens on loopback only and imports no meshlet package.
package echo
