package resource

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

// Envoy's outlier-detection defaults.
const (
	defaultODInterval         = 10 * time.Second
	defaultBaseEjectionTime   = 30 * time.Second
	defaultMaxEjectionTime    = 300 * time.Second
	defaultMaxEjectionPercent = 10
)

// decodeOutlierDetection converts outlier_detection (nil stays nil: no
// detection) and applies Envoy's defaults.
func decodeOutlierDetection(od *clusterv3.OutlierDetection) (*state.OutlierDetection, error) {
	if od == nil {
		return nil, nil
	}
	if len(od.GetMonitors()) > 0 {
		// Custom monitors decide ejections we would not make.
		return nil, errAt("monitors", "custom outlier monitors are not supported")
	}
	u32 := func(v *wrapperspb.UInt32Value, def uint32) uint32 {
		if v == nil {
			return def
		}
		return v.GetValue()
	}
	out := &state.OutlierDetection{
		Consecutive5xx:                         u32(od.GetConsecutive_5Xx(), 5),
		ConsecutiveGatewayFailure:              u32(od.GetConsecutiveGatewayFailure(), 5),
		ConsecutiveLocalOriginFailure:          u32(od.GetConsecutiveLocalOriginFailure(), 5),
		MaxEjectionPercent:                     u32(od.GetMaxEjectionPercent(), defaultMaxEjectionPercent),
		EnforcingConsecutive5xx:                u32(od.GetEnforcingConsecutive_5Xx(), 100),
		EnforcingConsecutiveGatewayFailure:     u32(od.GetEnforcingConsecutiveGatewayFailure(), 0),
		EnforcingConsecutiveLocalOriginFailure: u32(od.GetEnforcingConsecutiveLocalOriginFailure(), 100),
		EnforcingSuccessRate:                   u32(od.GetEnforcingSuccessRate(), 100),
		EnforcingLocalOriginSuccessRate:        u32(od.GetEnforcingLocalOriginSuccessRate(), 100),
		EnforcingFailurePercentage:             u32(od.GetEnforcingFailurePercentage(), 0),
		EnforcingFailurePercentageLocalOrigin:  u32(od.GetEnforcingFailurePercentageLocalOrigin(), 0),
		SuccessRateMinimumHosts:                u32(od.GetSuccessRateMinimumHosts(), 5),
		SuccessRateRequestVolume:               u32(od.GetSuccessRateRequestVolume(), 100),
		SuccessRateStdevFactor:                 u32(od.GetSuccessRateStdevFactor(), 1900),
		FailurePercentageThreshold:             u32(od.GetFailurePercentageThreshold(), 85),
		FailurePercentageMinimumHosts:          u32(od.GetFailurePercentageMinimumHosts(), 5),
		FailurePercentageRequestVolume:         u32(od.GetFailurePercentageRequestVolume(), 50),
		SplitExternalLocalOriginErrors:         od.GetSplitExternalLocalOriginErrors(),
		SuccessfulActiveHealthCheckUnejectHost: od.GetSuccessfulActiveHealthCheckUnejectHost().GetValue(),
		AlwaysEjectOneHost:                     od.GetAlwaysEjectOneHost().GetValue(),
	}
	for _, p := range []struct {
		name string
		v    uint32
	}{
		{"max_ejection_percent", out.MaxEjectionPercent},
		{"enforcing_consecutive_5xx", out.EnforcingConsecutive5xx},
		{"enforcing_consecutive_gateway_failure", out.EnforcingConsecutiveGatewayFailure},
		{"enforcing_consecutive_local_origin_failure", out.EnforcingConsecutiveLocalOriginFailure},
		{"enforcing_success_rate", out.EnforcingSuccessRate},
		{"enforcing_local_origin_success_rate", out.EnforcingLocalOriginSuccessRate},
		{"enforcing_failure_percentage", out.EnforcingFailurePercentage},
		{"enforcing_failure_percentage_local_origin", out.EnforcingFailurePercentageLocalOrigin},
		{"failure_percentage_threshold", out.FailurePercentageThreshold},
	} {
		if p.v > 100 {
			return nil, errAt(p.name, "must be at most 100, got %d", p.v)
		}
	}
	var err error
	if out.Interval, err = durationField("interval", od.GetInterval(), defaultODInterval); err != nil {
		return nil, err
	}
	if out.Interval <= 0 {
		return nil, errAt("interval", "must be greater than 0")
	}
	if out.BaseEjectionTime, err = durationField("base_ejection_time", od.GetBaseEjectionTime(), defaultBaseEjectionTime); err != nil {
		return nil, err
	}
	if out.BaseEjectionTime <= 0 {
		return nil, errAt("base_ejection_time", "must be greater than 0")
	}
	// Envoy's default cap is 300s or the base time, whichever is larger; an
	// explicit cap below the base time is a configuration error.
	if out.MaxEjectionTime, err = durationField("max_ejection_time", od.GetMaxEjectionTime(), max(defaultMaxEjectionTime, out.BaseEjectionTime)); err != nil {
		return nil, err
	}
	if out.MaxEjectionTime < out.BaseEjectionTime {
		return nil, errAt("max_ejection_time", "%v is smaller than base_ejection_time %v", out.MaxEjectionTime, out.BaseEjectionTime)
	}
	if out.MaxEjectionTimeJitter, err = durationField("max_ejection_time_jitter", od.GetMaxEjectionTimeJitter(), 0); err != nil {
		return nil, err
	}
	return out, nil
}

// decodeCircuitBreakers takes the DEFAULT-priority thresholds (meshlet has
// one routing priority) with Envoy's defaults. nil means all defaults.
func decodeCircuitBreakers(cb *clusterv3.CircuitBreakers) (*state.CircuitBreakers, error) {
	if cb == nil {
		return nil, nil
	}
	out := state.DefaultCircuitBreakers
	seen := false
	for i, t := range cb.GetThresholds() {
		if t.GetPriority() != 0 { // HIGH: no route asks for it here
			continue
		}
		if seen {
			return nil, errAt("thresholds", "priority DEFAULT given twice (index %d)", i)
		}
		seen = true
		u32 := func(v *wrapperspb.UInt32Value, def uint32) uint32 {
			if v == nil {
				return def
			}
			return v.GetValue()
		}
		out.MaxConnections = u32(t.GetMaxConnections(), state.DefaultMaxConnections)
		out.MaxPendingRequests = u32(t.GetMaxPendingRequests(), state.DefaultMaxPendingRequests)
		out.MaxRequests = u32(t.GetMaxRequests(), state.DefaultMaxRequests)
		out.MaxRetries = u32(t.GetMaxRetries(), state.DefaultMaxRetries)
		out.MaxConnectionPools = u32(t.GetMaxConnectionPools(), 0)
		if rb := t.GetRetryBudget(); rb != nil {
			budget := &state.RetryBudget{
				BudgetPercent:       state.DefaultRetryBudgetPercent,
				MinRetryConcurrency: u32(rb.GetMinRetryConcurrency(), state.DefaultMinRetryConcurrency),
			}
			if p := rb.GetBudgetPercent(); p != nil {
				if p.GetValue() < 0 || p.GetValue() > 100 {
					return nil, atIndex("thresholds", i, errAt("retry_budget.budget_percent", "must be within [0, 100], got %v", p.GetValue()))
				}
				budget.BudgetPercent = p.GetValue()
			}
			out.RetryBudget = budget
		}
	}
	return &out, nil
}
