package state

import "time"

// HealthCheckKind says which protocol an active health check speaks.
type HealthCheckKind int

const (
	HealthCheckHTTP HealthCheckKind = iota
	HealthCheckGRPC
	HealthCheckTCP
)

func (k HealthCheckKind) String() string {
	switch k {
	case HealthCheckHTTP:
		return "http"
	case HealthCheckGRPC:
		return "grpc"
	case HealthCheckTCP:
		return "tcp"
	}
	return "unknown"
}

// HealthCheck mirrors envoy.config.core.v3.HealthCheck with defaults
// applied by the decoder.
type HealthCheck struct {
	Kind HealthCheckKind

	Timeout  time.Duration
	Interval time.Duration
	// InitialJitter delays each host's first check by up to this much.
	InitialJitter time.Duration
	// IntervalJitter adds up to this much to every interval, and
	// IntervalJitterPercent up to that share of the interval.
	IntervalJitter        time.Duration
	IntervalJitterPercent uint32
	// UnhealthyThreshold failures in a row mark a healthy host unhealthy;
	// HealthyThreshold successes in a row bring an unhealthy host back (the
	// very first check needs only one).
	UnhealthyThreshold uint32
	HealthyThreshold   uint32
	// NoTrafficInterval is used while the cluster has not seen traffic
	// (default 60s); NoTrafficHealthyInterval, when set, for healthy hosts
	// then.
	NoTrafficInterval        time.Duration
	NoTrafficHealthyInterval time.Duration
	// UnhealthyInterval applies to unhealthy hosts (default Interval);
	// the edge intervals apply right after a transition (defaults
	// UnhealthyInterval and Interval).
	UnhealthyInterval     time.Duration
	UnhealthyEdgeInterval time.Duration
	HealthyEdgeInterval   time.Duration

	HTTP *HTTPHealthCheck
	GRPC *GRPCHealthCheck
	TCP  *TCPHealthCheck
}

// HTTPHealthCheck mirrors HealthCheck.HttpHealthCheck.
type HTTPHealthCheck struct {
	// Host is the :authority; empty means the cluster name.
	Host string
	Path string
	// ExpectedStatuses are half-open ranges [Start, End); default 200-201.
	ExpectedStatuses []StatusRange
	// RetriableStatuses fail the check but count against
	// UnhealthyThreshold instead of failing at once.
	RetriableStatuses      []StatusRange
	RequestHeadersToAdd    []HeaderValueOption
	RequestHeadersToRemove []string
	// HTTP2 speaks h2c (codec_client_type HTTP2).
	HTTP2 bool
}

// StatusRange is a half-open range of HTTP status codes.
type StatusRange struct{ Start, End int }

// Contains reports whether code is in [Start, End).
func (r StatusRange) Contains(code int) bool { return code >= r.Start && code < r.End }

// GRPCHealthCheck mirrors HealthCheck.GrpcHealthCheck (grpc.health.v1).
type GRPCHealthCheck struct {
	ServiceName string
	// Authority is the :authority; empty means the cluster name.
	Authority string
}

// TCPHealthCheck mirrors HealthCheck.TcpHealthCheck. With no Send the
// check is a connect; with no Receive any reply (or none) passes.
type TCPHealthCheck struct {
	Send []byte
	// Receive: each chunk must be found in the response, in order.
	Receive [][]byte
}
