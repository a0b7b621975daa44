package upstream

import "github.com/meshlet/meshlet/lb"

// LocalFailure classifies failures that originate in the proxy rather than
// in an upstream response (outlier detection's "local origin" errors).
type LocalFailure int

const (
	// ConnectFailure: the connection could not be established (UF).
	ConnectFailure LocalFailure = iota
	// ConnectTimeout: connect_timeout passed (UF).
	ConnectTimeout
	// UpstreamReset: the connection or stream was reset before a response (UR/UC).
	UpstreamReset
	// RequestTimeout: the per-try or route timeout passed (UT).
	RequestTimeout
)

// ReportHTTP tells the cluster that h answered with an HTTP status (for
// gRPC, the grpc-status of a trailers-only response mapped to HTTP as
// Envoy's router does; a status in trailers is not counted). Outlier
// detection counts 5xx and gateway errors (502, 503, 504) from it. It is
// lock-free unless the report crosses an ejection threshold.
func (c *Cluster) ReportHTTP(h *lb.Host, status int) {
	c.sawTraffic()
	c.od.putHTTP(h, status)
}

// ReportLocal tells the cluster that a request to h failed locally.
// Unless outlier_detection.split_external_local_origin_errors is set, the
// failure counts as a 503 (504 for RequestTimeout), as in Envoy.
func (c *Cluster) ReportLocal(h *lb.Host, f LocalFailure) {
	c.sawTraffic()
	c.od.putLocal(h, f)
}

// ReportConnected tells the cluster that a connection to h succeeded and
// no HTTP status will follow (tcp_proxy). Outlier detection counts it as a
// success.
func (c *Cluster) ReportConnected(h *lb.Host) {
	c.sawTraffic()
	c.od.putConnected(h)
}

// Resource names a circuit-breaker threshold.
type Resource int

const (
	ResourceConnections Resource = iota
	ResourcePendingRequests
	ResourceRequests
	ResourceRetries
	// ResourceConnectionPools: one unit per upstream connection pool
	// (max_connection_pools; unlimited by default).
	ResourceConnectionPools
	numResources
)

// Acquire takes one unit of a circuit-breaker resource. ok is false when
// the threshold is reached (the caller replies 503 with flag UO, or, for
// ResourceRetries, does not retry); otherwise release must be called once
// when the request/connection/retry ends. The overflow is counted in
// Stats. Acquire allocates nothing.
func (c *Cluster) Acquire(r Resource) (release func(), ok bool) {
	return c.cb.acquire(r)
}

// ClusterStats are a cluster's outlier-detection and circuit-breaker
// counters.
type ClusterStats struct {
	Outlier OutlierStats
	Breaker BreakerStats
}

// Stats returns a snapshot of the cluster's counters (admin and tests;
// not for the request path).
func (c *Cluster) Stats() ClusterStats {
	return ClusterStats{Outlier: c.od.snapshot(), Breaker: c.cb.snapshot()}
}

func noop() {}
