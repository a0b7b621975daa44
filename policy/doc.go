// Package policy owns HTTP routing decisions as pure functions over state:
// virtual host and route selection, weighted and header-named cluster choice,
// path and host rewrites, redirects, header mutation ordering and request
// hashing for ring-hash/maglev.
//
// Functions here do no I/O and keep no per-request allocations beyond the
// strings they return; they are table-tested and fuzzed. policy imports only
// state (and lb for the hash input type is not needed: hashes are uint64).
package policy
