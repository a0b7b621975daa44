// Package policy owns HTTP routing decisions as pure functions over state:
// virtual host and route selection, weighted and header-named cluster choice,
// path and host rewrites, redirects, header mutation ordering, header value
// formatting, request hashing for ring-hash/maglev, RBAC policy evaluation
// (EvalRBAC, for the network and HTTP filters) and path normalization
// (NormalizePath, applied by the connection manager before routing).
//
// Functions here do no I/O and keep no per-request allocations beyond the
// strings they return; they are table-tested and fuzzed. The only state kept
// is a cache of per-RouteConfig virtual host indexes, keyed so that replaced
// configurations are still collected.
//
// policy imports only state and the standard library (plus xxhash for
// Envoy-compatible request hashes). It must not import dataplane, xds, lb or
// anything above them: the proxy calls policy, never the reverse.
package policy
