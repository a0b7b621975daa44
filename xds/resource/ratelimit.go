package resource

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	nlrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

const (
	typeLocalRateLimit    = "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
	typeNetLocalRateLimit = "type.googleapis.com/envoy.extensions.filters.network.local_ratelimit.v3.LocalRateLimit"
)

// decodeLocalRateLimit decodes the HTTP local rate limit filter config (the
// same message serves http_filters and typed_per_filter_config).
func decodeLocalRateLimit(a *anypb.Any) (*state.LocalRateLimit, error) {
	var l lrlv3.LocalRateLimit
	if err := a.UnmarshalTo(&l); err != nil {
		return nil, err
	}
	if l.GetStatPrefix() == "" {
		return nil, errAt("stat_prefix", "is required")
	}
	out := &state.LocalRateLimit{
		StatPrefix:                     l.GetStatPrefix(),
		Status:                         429,
		RateLimitedAsResourceExhausted: l.GetRateLimitedAsResourceExhausted(),
	}
	// Descriptors and rate_limits select buckets by request attributes; a
	// config relying on them would be limited by the wrong bucket here.
	switch {
	case len(l.GetDescriptors()) > 0:
		return nil, errAt("descriptors", "are not supported")
	case len(l.GetRateLimits()) > 0:
		return nil, errAt("rate_limits", "are not supported")
	case l.GetLocalRateLimitPerDownstreamConnection():
		return nil, errAt("local_rate_limit_per_downstream_connection", "is not supported")
	case l.GetLocalClusterRateLimit() != nil:
		return nil, errAt("local_cluster_rate_limit", "is not supported")
	}
	if s := l.GetStatus(); s != nil {
		code := int(s.GetCode())
		// Envoy treats codes below 400 as the default 429.
		if code >= 400 {
			out.Status = code
		}
	}
	if tb := l.GetTokenBucket(); tb != nil {
		b, err := tokenBucket(tb)
		if err != nil {
			return nil, at("token_bucket", err)
		}
		out.Bucket = &b
	}
	var err error
	if out.Enabled, err = runtimeFraction("filter_enabled", l.GetFilterEnabled()); err != nil {
		return nil, err
	}
	if out.Enforced, err = runtimeFraction("filter_enforced", l.GetFilterEnforced()); err != nil {
		return nil, err
	}
	if out.ResponseHeadersToAdd, err = headerAdds("response_headers_to_add", l.GetResponseHeadersToAdd()); err != nil {
		return nil, err
	}
	if out.RequestHeadersToAddWhenNotEnforced, err = headerAdds("request_headers_to_add_when_not_enforced", l.GetRequestHeadersToAddWhenNotEnforced()); err != nil {
		return nil, err
	}
	return out, nil
}

// runtimeFraction is the default_value of a RuntimeFractionalPercent; unset
// means 0%, Envoy's "off for safety" default for both rate limit switches.
func runtimeFraction(path string, r *corev3.RuntimeFractionalPercent) (state.Fraction, error) {
	if r == nil {
		return state.Fraction{Denominator: state.PerHundred}, nil
	}
	return fraction(path+".default_value", r.GetDefaultValue())
}

func tokenBucket(tb *typev3.TokenBucket) (state.TokenBucket, error) {
	out := state.TokenBucket{MaxTokens: tb.GetMaxTokens(), TokensPerFill: 1}
	if out.MaxTokens == 0 {
		return out, errAt("max_tokens", "must be at least 1")
	}
	if v := tb.GetTokensPerFill(); v != nil {
		if v.GetValue() == 0 {
			return out, errAt("tokens_per_fill", "must be at least 1")
		}
		out.TokensPerFill = v.GetValue()
	}
	if tb.GetFillInterval() == nil {
		return out, errAt("fill_interval", "is required")
	}
	d, err := durationField("fill_interval", tb.GetFillInterval(), 0)
	if err != nil {
		return out, err
	}
	// Envoy requires at least 1ms; a zero interval would refill forever.
	if d < 1e6 {
		return out, errAt("fill_interval", "%v is below 1ms", d)
	}
	out.FillInterval = d
	return out, nil
}

// decodeNetworkRateLimit decodes the network local_ratelimit filter.
func decodeNetworkRateLimit(a *anypb.Any) (*state.NetworkRateLimit, error) {
	var l nlrlv3.LocalRateLimit
	if err := a.UnmarshalTo(&l); err != nil {
		return nil, err
	}
	if l.GetStatPrefix() == "" {
		return nil, errAt("stat_prefix", "is required")
	}
	if l.GetShareKey() != "" {
		return nil, errAt("share_key", "is not supported")
	}
	// runtime_enabled's default_value false switches the filter off; with
	// no runtime its default is all we can honour.
	if re := l.GetRuntimeEnabled(); re != nil && !re.GetDefaultValue().GetValue() {
		return nil, nil
	}
	if l.GetTokenBucket() == nil {
		return nil, errAt("token_bucket", "is required")
	}
	b, err := tokenBucket(l.GetTokenBucket())
	if err != nil {
		return nil, at("token_bucket", err)
	}
	return &state.NetworkRateLimit{StatPrefix: l.GetStatPrefix(), Bucket: b}, nil
}
