package state

import "time"

// RetryOn is the set of retry_on conditions of a RetryPolicy, as bits.
type RetryOn uint32

// Retry conditions (router filter x-envoy-retry-on / x-envoy-retry-grpc-on
// values). 5xx and gateway-error also cover resets and connect failures,
// as in Envoy.
const (
	Retry5xx RetryOn = 1 << iota
	RetryGatewayError
	RetryReset
	RetryResetBeforeRequest
	RetryConnectFailure
	RetryRetriable4xx
	RetryRefusedStream
	RetryRetriableStatusCodes
	RetryRetriableHeaders
	RetryEnvoyRateLimited
	RetryGRPCCancelled
	RetryGRPCDeadlineExceeded
	RetryGRPCInternal
	RetryGRPCResourceExhausted
	RetryGRPCUnavailable
)

// RetryGRPCAny is every gRPC status condition.
const RetryGRPCAny = RetryGRPCCancelled | RetryGRPCDeadlineExceeded | RetryGRPCInternal |
	RetryGRPCResourceExhausted | RetryGRPCUnavailable

// Retry defaults (Envoy's).
const (
	DefaultNumRetries   = 1
	DefaultRetryBackOff = 25 * time.Millisecond
	// DefaultHostSelectionRetryMaxAttempts is Envoy's default for
	// host_selection_retry_max_attempts.
	DefaultHostSelectionRetryMaxAttempts = 1
)

// RetryPolicy mirrors envoy.config.route.v3.RetryPolicy. A route's policy
// replaces its virtual host's (no merging), as in Envoy.
type RetryPolicy struct {
	RetryOn RetryOn
	// NumRetries: default 1.
	NumRetries uint32
	// PerTryTimeout and PerTryIdleTimeout: zero means none.
	PerTryTimeout     time.Duration
	PerTryIdleTimeout time.Duration
	// BackOffBase default 25ms; BackOffMax default 10 x base.
	BackOffBase time.Duration
	BackOffMax  time.Duration
	// RetriableStatusCodes are used by retriable-status-codes.
	RetriableStatusCodes []uint32
	// RetriableHeaders are matched against the response headers by
	// retriable-headers (any one matching retries).
	RetriableHeaders []HeaderMatcher
	// PreviousHosts is the envoy.retry_host_predicates.previous_hosts
	// predicate: a retry avoids the hosts already tried.
	PreviousHosts bool
	// HostSelectionRetryMaxAttempts bounds re-picks when the predicate
	// rejects a host (default 1).
	HostSelectionRetryMaxAttempts uint32
}

// MirrorPolicy mirrors RouteAction.RequestMirrorPolicy.
type MirrorPolicy struct {
	Cluster string
	// Numerator/Denominator is runtime_fraction.default_value; a policy
	// without runtime_fraction mirrors every request (1/1). Denominator is
	// 100, 10000 or 1000000.
	Numerator, Denominator uint32
	// TraceSampled false mirrors only trace-sampled requests in Envoy;
	// meshlet has no tracing, so it is decoded and documented as ignored.
	TraceSampled *bool
	// DisableShadowHostSuffixAppend keeps the authority as is instead of
	// appending "-shadow".
	DisableShadowHostSuffixAppend bool
}
