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
// gRPC, the HTTP status of the response; grpc-status is reported through
// the same status mapped as Envoy does for outlier detection: 200). Outlier
// detection counts 5xx and gateway errors (502, 503, 504) from it.
//
// Stub: the outlier-detection owner replaces this file's bodies.
func (c *Cluster) ReportHTTP(h *lb.Host, status int) {}

// ReportLocal tells the cluster that a request to h failed locally.
func (c *Cluster) ReportLocal(h *lb.Host, f LocalFailure) {}

// Resource names a circuit-breaker threshold.
type Resource int

const (
	ResourceConnections Resource = iota
	ResourcePendingRequests
	ResourceRequests
	ResourceRetries
)

// Acquire takes one unit of a circuit-breaker resource. ok is false when
// the threshold is reached (the caller replies 503 with flag UO, or, for
// ResourceRetries, does not retry); otherwise release must be called once
// when the request/connection/retry ends.
func (c *Cluster) Acquire(r Resource) (release func(), ok bool) { return noop, true }

func noop() {}
