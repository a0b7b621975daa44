// Package upstream owns the runtime side of clusters: one Cluster per xDS
// cluster, holding its lb.Balancer fed from EDS or DNS, its connect timeout
// and TLS settings, and per-endpoint slots where the HTTP layer keeps its
// connection pools.
//
// Manager follows the state.Store: clusters appear, change and go as
// snapshots do; an endpoint that leaves a cluster has its pools closed
// (idle connections now, busy ones when their requests end).
//
// Each Cluster also owns its traffic policy: outlier detection fed by
// ReportHTTP/ReportLocal/ReportConnected (outlier.go), circuit breakers
// behind Acquire (breaker.go), and active health checks, one goroutine per
// host (health.go, healthprobe.go). Their verdicts become lb.Host flags and
// a rebuilt picker; Pick never waits for them.
//
// upstream imports state and lb; the request path's HTTP framing lives in
// httpproxy (health probes use net/http and grpc-go's health client).
package upstream
