package state

import "time"

// OutlierDetection mirrors envoy.config.cluster.v3.OutlierDetection with
// Envoy's defaults applied by the decoder. Percentages are 0-100.
type OutlierDetection struct {
	// Consecutive5xx ejects after this many 5xx in a row (default 5). With
	// SplitExternalLocalOriginErrors off, local-origin failures count too.
	Consecutive5xx uint32
	// ConsecutiveGatewayFailure ejects after this many 502/503/504 (or
	// local-origin failures when not split) in a row (default 5).
	ConsecutiveGatewayFailure uint32
	// ConsecutiveLocalOriginFailure ejects after this many connect
	// failures, timeouts and resets in a row when split (default 5).
	ConsecutiveLocalOriginFailure uint32

	// Interval between ejection sweeps (default 10s).
	Interval time.Duration
	// BaseEjectionTime times the number of ejections is how long a host
	// stays out (default 30s), capped by MaxEjectionTime (default
	// max(300s, BaseEjectionTime)).
	BaseEjectionTime time.Duration
	MaxEjectionTime  time.Duration
	// MaxEjectionTimeJitter adds up to this much random time to each
	// ejection (default 0).
	MaxEjectionTimeJitter time.Duration
	// MaxEjectionPercent caps the share of hosts ejected at once (default
	// 10): an ejection that would exceed it is skipped, so with fewer than
	// ten hosts nothing is ejected by default unless AlwaysEjectOneHost.
	MaxEjectionPercent uint32
	// AlwaysEjectOneHost lets one host be ejected whatever
	// MaxEjectionPercent says.
	AlwaysEjectOneHost bool

	// Enforcing* are the chances, in percent, that a detected outlier is
	// really ejected.
	EnforcingConsecutive5xx                uint32 // default 100
	EnforcingConsecutiveGatewayFailure     uint32 // default 0
	EnforcingConsecutiveLocalOriginFailure uint32 // default 100
	EnforcingSuccessRate                   uint32 // default 100
	EnforcingLocalOriginSuccessRate        uint32 // default 100
	EnforcingFailurePercentage             uint32 // default 0
	EnforcingFailurePercentageLocalOrigin  uint32 // default 0

	// Success rate: a host whose success rate is below
	// mean - stdev*SuccessRateStdevFactor/1000 is an outlier, computed only
	// when at least SuccessRateMinimumHosts hosts (default 5) each had
	// SuccessRateRequestVolume requests (default 100) in the interval.
	SuccessRateMinimumHosts  uint32
	SuccessRateRequestVolume uint32
	SuccessRateStdevFactor   uint32 // default 1900

	// Failure percentage: a host failing at least FailurePercentageThreshold
	// percent (default 85) of at least FailurePercentageRequestVolume
	// requests (default 50) is an outlier when at least
	// FailurePercentageMinimumHosts hosts (default 5) qualify.
	FailurePercentageThreshold     uint32
	FailurePercentageMinimumHosts  uint32
	FailurePercentageRequestVolume uint32

	// SplitExternalLocalOriginErrors keeps local-origin failures (connect
	// failure, timeout, reset) apart from upstream responses.
	SplitExternalLocalOriginErrors bool
	// SuccessfulActiveHealthCheckUnejectHost: a passing active health check
	// returns an ejected host at once.
	SuccessfulActiveHealthCheckUnejectHost bool
}

// CircuitBreakers is the DEFAULT-priority entry of
// envoy.config.cluster.v3.CircuitBreakers.thresholds with defaults applied.
type CircuitBreakers struct {
	MaxConnections     uint32 // default 1024
	MaxPendingRequests uint32 // default 1024
	MaxRequests        uint32 // default 1024
	MaxRetries         uint32 // default 3
	// MaxConnectionPools, 0 = unlimited (Envoy's default).
	MaxConnectionPools uint32
	// RetryBudget, when set, replaces MaxRetries: retries may take
	// BudgetPercent of the active requests, but always at least
	// MinRetryConcurrency.
	RetryBudget *RetryBudget
}

// RetryBudget mirrors CircuitBreakers.Thresholds.RetryBudget.
type RetryBudget struct {
	BudgetPercent       float64 // default 20
	MinRetryConcurrency uint32  // default 3
}

// Circuit-breaker defaults (Envoy's).
const (
	DefaultMaxConnections      = 1024
	DefaultMaxPendingRequests  = 1024
	DefaultMaxRequests         = 1024
	DefaultMaxRetries          = 3
	DefaultRetryBudgetPercent  = 20.0
	DefaultMinRetryConcurrency = 3
)

// DefaultCircuitBreakers is what a cluster without circuit_breakers gets.
var DefaultCircuitBreakers = CircuitBreakers{
	MaxConnections:     DefaultMaxConnections,
	MaxPendingRequests: DefaultMaxPendingRequests,
	MaxRequests:        DefaultMaxRequests,
	MaxRetries:         DefaultMaxRetries,
}
