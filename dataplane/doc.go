// Package dataplane owns the proxy's listeners and connection path: binding
// the listeners of the current snapshot, accepting, original-destination
// dispatch (use_original_dst), filter-chain matching on peeked bytes (TLS
// SNI/ALPN, HTTP inspector) that are then replayed, TLS termination,
// tcp_proxy with half-close and idle timeouts, and draining listeners that
// are removed or replaced. HTTP connection managers hand the connection to
// dataplane/httpproxy.
//
// Files by concern: server.go (Server, reconcile, address index),
// listener.go (socket, accept loop, connection tracking, drain), conn.go
// (per-connection path), config.go (compiled listener config, downstream
// TLS), match.go (filter chain selection), inspect.go (TLS ClientHello and
// HTTP inspectors, pure), replay.go (peek and the splice-friendly replay
// conn), tcpproxy.go (tcp_proxy, half-close copy), idle*.go (idle timeout),
// origdst_*.go (SO_ORIGINAL_DST), stats.go. whitebox.go (HandleAs: serve a
// connection as if captured to a given destination). handoff.go (passing listening
// sockets to a successor process), limits.go (connection_limit and the
// global connection cap), limits_heap.go (heap overload monitor).
// gateway.go (the SNI gateway on 15443: ClientHello peek, passthrough splice
// or mTLS termination re-originated over HBONE), gateway_route.go (server
// name -> cluster: Istio's outbound_.PORT_.SUBSET_.HOST form, host map).
//
// dataplane may import state, lb, policy and its subpackages; nothing below
// imports dataplane.
package dataplane
