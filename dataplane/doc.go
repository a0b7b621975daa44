// Package dataplane owns the proxy's listeners and connection path: binding
// the listeners of the current snapshot, accepting, original-destination
// dispatch (use_original_dst), filter-chain matching on peeked bytes (TLS
// SNI/ALPN, HTTP inspector) that are then replayed, TLS termination,
// tcp_proxy with half-close and idle timeouts, and draining listeners that
// are removed or replaced. HTTP connection managers hand the connection to
// dataplane/httpproxy.
//
// dataplane may import state, lb, policy and its subpackages; nothing below
// imports dataplane.
package dataplane
