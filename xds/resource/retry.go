package resource

import (
	"fmt"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/meshlet/meshlet/state"
)

// retryOnNames maps retry_on tokens (the router filter's x-envoy-retry-on
// and x-envoy-retry-grpc-on values) to conditions.
var retryOnNames = map[string]state.RetryOn{
	"5xx":                    state.Retry5xx,
	"gateway-error":          state.RetryGatewayError,
	"reset":                  state.RetryReset,
	"reset-before-request":   state.RetryResetBeforeRequest,
	"connect-failure":        state.RetryConnectFailure,
	"retriable-4xx":          state.RetryRetriable4xx,
	"refused-stream":         state.RetryRefusedStream,
	"retriable-status-codes": state.RetryRetriableStatusCodes,
	"retriable-headers":      state.RetryRetriableHeaders,
	"envoy-ratelimited":      state.RetryEnvoyRateLimited,
	"cancelled":              state.RetryGRPCCancelled,
	"deadline-exceeded":      state.RetryGRPCDeadlineExceeded,
	"internal":               state.RetryGRPCInternal,
	"resource-exhausted":     state.RetryGRPCResourceExhausted,
	"unavailable":            state.RetryGRPCUnavailable,
}

// Retry host predicates meshlet knows. omit_canary_hosts is accepted as a
// no-op: meshlet has no canary hosts.
const (
	predicatePreviousHosts = "envoy.retry_host_predicates.previous_hosts"
	predicateOmitCanary    = "envoy.retry_host_predicates.omit_canary_hosts"
)

// decodeRetryPolicy decodes a route's or virtual host's retry_policy.
// Like Envoy, unknown retry_on tokens are ignored (they may name
// conditions of newer versions, e.g. http3-post-connect-failure).
// retry_priority and rate_limited_retry_back_off are accepted and not
// acted on; retriable_request_headers is rejected because ignoring it
// would retry requests the operator meant to exclude.
func decodeRetryPolicy(p *routev3.RetryPolicy) (*state.RetryPolicy, error) {
	if p == nil {
		return nil, nil
	}
	out := &state.RetryPolicy{
		NumRetries:                    state.DefaultNumRetries,
		HostSelectionRetryMaxAttempts: state.DefaultHostSelectionRetryMaxAttempts,
	}
	for tok := range strings.SplitSeq(p.GetRetryOn(), ",") {
		out.RetryOn |= retryOnNames[strings.TrimSpace(tok)]
	}
	if n := p.GetNumRetries(); n != nil {
		out.NumRetries = n.GetValue()
	}
	var err error
	if out.PerTryTimeout, err = durationField("per_try_timeout", p.GetPerTryTimeout(), 0); err != nil {
		return nil, err
	}
	if out.PerTryIdleTimeout, err = durationField("per_try_idle_timeout", p.GetPerTryIdleTimeout(), 0); err != nil {
		return nil, err
	}
	out.BackOffBase = state.DefaultRetryBackOff
	if b := p.GetRetryBackOff(); b != nil {
		if b.GetBaseInterval() == nil {
			return nil, errAt("retry_back_off.base_interval", "is required")
		}
		if out.BackOffBase, err = durationField("retry_back_off.base_interval", b.GetBaseInterval(), 0); err != nil {
			return nil, err
		}
		if out.BackOffBase < time.Millisecond {
			return nil, errAt("retry_back_off.base_interval", "must be at least 1ms")
		}
		if b.GetMaxInterval() != nil {
			if out.BackOffMax, err = durationField("retry_back_off.max_interval", b.GetMaxInterval(), 0); err != nil {
				return nil, err
			}
			if out.BackOffMax < out.BackOffBase {
				return nil, errAt("retry_back_off.max_interval", "%v is less than base_interval %v", out.BackOffMax, out.BackOffBase)
			}
		}
	}
	if out.BackOffMax == 0 {
		out.BackOffMax = 10 * out.BackOffBase
	}
	out.RetriableStatusCodes = append(out.RetriableStatusCodes, p.GetRetriableStatusCodes()...)
	for i, h := range p.GetRetriableHeaders() {
		m, err := decodeHeaderMatcher(h)
		if err != nil {
			return nil, atIndex("retriable_headers", i, err)
		}
		out.RetriableHeaders = append(out.RetriableHeaders, m)
	}
	if len(p.GetRetriableRequestHeaders()) > 0 {
		return nil, errAt("retriable_request_headers", "is not supported")
	}
	for i, hp := range p.GetRetryHostPredicate() {
		switch hp.GetName() {
		case predicatePreviousHosts:
			out.PreviousHosts = true
		case predicateOmitCanary:
		default:
			return nil, errAt(fmt.Sprintf("retry_host_predicate[%d].name", i), "unsupported predicate %q", hp.GetName())
		}
	}
	if n := p.GetHostSelectionRetryMaxAttempts(); n > 0 {
		out.HostSelectionRetryMaxAttempts = uint32(min(n, 100))
	}
	return out, nil
}

// decodeMirrorPolicies decodes request_mirror_policies.
func decodeMirrorPolicies(ps []*routev3.RouteAction_RequestMirrorPolicy) ([]state.MirrorPolicy, error) {
	var out []state.MirrorPolicy
	for i, p := range ps {
		m := state.MirrorPolicy{
			Cluster:                       p.GetCluster(),
			Numerator:                     1,
			Denominator:                   1,
			DisableShadowHostSuffixAppend: p.GetDisableShadowHostSuffixAppend(),
		}
		if m.Cluster == "" {
			if p.GetClusterHeader() != "" {
				return nil, errAt(fmt.Sprintf("request_mirror_policies[%d].cluster_header", i), "is not supported")
			}
			return nil, errAt(fmt.Sprintf("request_mirror_policies[%d].cluster", i), "is required")
		}
		if rf := p.GetRuntimeFraction(); rf != nil {
			num, den, err := mirrorFraction(rf.GetDefaultValue())
			if err != nil {
				return nil, at(fmt.Sprintf("request_mirror_policies[%d].runtime_fraction.default_value", i), err)
			}
			m.Numerator, m.Denominator = num, den
		}
		if ts := p.GetTraceSampled(); ts != nil {
			v := ts.GetValue()
			m.TraceSampled = &v
		}
		out = append(out, m)
	}
	return out, nil
}

// mirrorFraction returns a FractionalPercent as numerator/denominator;
// a numerator above the denominator means always, as in Envoy.
func mirrorFraction(f *typev3.FractionalPercent) (num, den uint32, err error) {
	switch f.GetDenominator() {
	case typev3.FractionalPercent_HUNDRED:
		den = 100
	case typev3.FractionalPercent_TEN_THOUSAND:
		den = 10000
	case typev3.FractionalPercent_MILLION:
		den = 1000000
	default:
		return 0, 0, errAt("denominator", "unknown value %d", f.GetDenominator())
	}
	return min(f.GetNumerator(), den), den, nil
}
