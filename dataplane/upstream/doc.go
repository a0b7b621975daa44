// Package upstream owns the runtime side of clusters: one Cluster per xDS
// cluster, holding its lb.Balancer fed from EDS or DNS, its connect timeout
// and TLS settings, and per-endpoint slots where the HTTP layer keeps its
// connection pools.
//
// Manager follows the state.Store: clusters appear, change and go as
// snapshots do; an endpoint that leaves a cluster has its pools closed
// (idle connections now, busy ones when their requests end).
//
// upstream imports state and lb; it knows nothing of HTTP framing.
package upstream
