// Package memtrim gives memory back to the system that a long-running proxy
// holds without using: the executable's code and read-only data pages that
// only start-up touched (unmapped after start; the page cache keeps them, so
// a later use is a minor fault), and heap pages freed after a traffic burst
// (returned when the heap in use is far below what the process retains, like
// Envoy's shrink_heap overload action does with tcmalloc).
//
// It imports only the standard library and x/sys; cmd/ztunnel calls it.
package memtrim
