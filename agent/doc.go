// Package agent owns the proxyless gRPC agent behind `ztunnel agent`: what
// Istio's pilot-agent does in the grpc-agent template, for grpc-go and
// grpc-java applications that talk xDS themselves.
//
//   - bootstrap.go writes the gRFC A27 bootstrap (xds_servers pointing at
//     the agent, node id and metadata, A36's
//     server_listener_resource_name_template, A29's file_watcher
//     certificate provider) atomically.
//   - certs.go fetches the workload certificate from an identity fetch
//     function (built-in CA, Istio CA) and writes chain, key and root to
//     the files the bootstrap names, renewing before expiry.
//   - proxy.go, sotw.go and delta.go are the xDS proxy: they accept the
//     application's ADS streams (state of the world and delta) on a local
//     Unix socket or loopback port and forward each one over a single
//     upstream gRPC connection to the control plane, replaying the
//     application's subscriptions after the upstream reconnects so the
//     application's streams never break.
//
// Idle cost matters (the agent lives next to every application): nothing
// here polls. The only timers are the certificate renewal and the upstream
// reconnect backoff.
//
// agent imports identity and xds (for the node model only); it must not
// import dataplane, lb, policy, config, admin, hbone or the proxy's wiring
// (imports_test.go pins this).
package agent
