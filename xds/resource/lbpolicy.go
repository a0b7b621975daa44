//lint:file-ignore SA1019 deprecated Envoy fields are still sent by control planes and must be honoured, not ignored.

package resource

import (
	"fmt"
	wrrlocalityv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/wrr_locality/v3"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	maglevv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/maglev/v3"
	randomv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	ringhashv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/ring_hash/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

// Defaults and limits Envoy applies to the load balancer settings.
const (
	defaultChoiceCount       = 2
	defaultActiveRequestBias = 1.0
	defaultMinRingSize       = 1024
	defaultMaxRingSize       = 8 * 1024 * 1024
	maxRingSize              = 8 * 1024 * 1024
	defaultMaglevTableSize   = 65537
	maxMaglevTableSize       = 5000011
)

const typeURLPrefix = "type.googleapis.com/"

func decodeLB(out *state.Cluster, c *clusterv3.Cluster) error {
	out.ChoiceCount = defaultChoiceCount
	out.ActiveRequestBias = defaultActiveRequestBias
	out.MinRingSize, out.MaxRingSize = defaultMinRingSize, defaultMaxRingSize
	out.MaglevTableSize = defaultMaglevTableSize
	out.LocalityWeighted = c.GetCommonLbConfig().GetLocalityWeightedLbConfig() != nil
	if c.GetCommonLbConfig().GetZoneAwareLbConfig() != nil {
		return errAt("common_lb_config.zone_aware_lb_config", "is not supported")
	}
	if c.GetLoadBalancingPolicy() == nil && c.GetCommonLbConfig().GetConsistentHashingLbConfig().GetUseHostnameForHashing() {
		switch c.GetLbPolicy() {
		case clusterv3.Cluster_RING_HASH, clusterv3.Cluster_MAGLEV:
			// Hashing by hostname instead of address changes which host a
			// key lands on; the typed forms reject it the same way.
			return errAt("common_lb_config.consistent_hashing_lb_config.use_hostname_for_hashing", "is not supported")
		}
	}
	if p := c.GetCommonLbConfig().GetHealthyPanicThreshold(); p != nil {
		v := p.GetValue()
		if !(v >= 0 && v <= 100) { // also rejects NaN
			return errAt("common_lb_config.healthy_panic_threshold.value", "%v is not a percentage in [0, 100]", v)
		}
		out.HealthyPanicThreshold = &v
	}

	// Envoy gives load_balancing_policy precedence over lb_policy.
	if c.GetLoadBalancingPolicy() != nil {
		return at("load_balancing_policy", decodeTypedLB(out, c))
	}
	switch c.GetLbPolicy() {
	case clusterv3.Cluster_ROUND_ROBIN:
		out.LBPolicy = state.LBRoundRobin
	case clusterv3.Cluster_LEAST_REQUEST:
		out.LBPolicy = state.LBLeastRequest
		if cfg := c.GetLeastRequestLbConfig(); cfg != nil {
			if err := leastRequest(out, cfg.GetChoiceCount(), cfg.GetActiveRequestBias().GetDefaultValue(), cfg.GetActiveRequestBias() != nil); err != nil {
				return at("least_request_lb_config", err)
			}
		}
	case clusterv3.Cluster_RANDOM:
		out.LBPolicy = state.LBRandom
	case clusterv3.Cluster_RING_HASH:
		out.LBPolicy = state.LBRingHash
		if cfg := c.GetRingHashLbConfig(); cfg != nil {
			if cfg.GetHashFunction() != clusterv3.Cluster_RingHashLbConfig_XX_HASH {
				return errAt("ring_hash_lb_config.hash_function", "%v is not supported, only XX_HASH", cfg.GetHashFunction())
			}
			if err := ringSizes(out, cfg.GetMinimumRingSize(), cfg.GetMaximumRingSize()); err != nil {
				return at("ring_hash_lb_config", err)
			}
		}
	case clusterv3.Cluster_MAGLEV:
		out.LBPolicy = state.LBMaglev
		if err := maglevTable(out, c.GetMaglevLbConfig().GetTableSize()); err != nil {
			return at("maglev_lb_config", err)
		}
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		// ORIGINAL_DST clusters pick the host themselves.
		if out.Type != state.ClusterOriginalDst {
			return errAt("lb_policy", "CLUSTER_PROVIDED is only valid for ORIGINAL_DST clusters")
		}
	default:
		return errAt("lb_policy", "%v is not supported", c.GetLbPolicy())
	}
	return nil
}

// decodeTypedLB picks the first policy we implement, which is how Envoy and
// gRPC treat the list: later entries are fallbacks for older clients.
func decodeTypedLB(out *state.Cluster, c *clusterv3.Cluster) error {
	var seen []string
	for i, p := range c.GetLoadBalancingPolicy().GetPolicies() {
		tc := p.GetTypedExtensionConfig().GetTypedConfig()
		if tc == nil {
			return errAt(fmt.Sprintf("policies[%d].typed_extension_config.typed_config", i), "is required")
		}
		ok, err := typedLB(out, tc.GetTypeUrl(), tc.UnmarshalTo)
		if err != nil {
			return at(fmt.Sprintf("policies[%d].typed_extension_config.typed_config", i), err)
		}
		if ok {
			return nil
		}
		seen = append(seen, tc.GetTypeUrl())
	}
	if len(seen) == 0 {
		return errAt("policies", "at least one policy is required")
	}
	return errAt("policies", "none of the policies is supported: %v", seen)
}

func typedLB(out *state.Cluster, typeURL string, unmarshal func(proto.Message) error) (bool, error) {
	switch typeURL {
	case typeURLPrefix + "envoy.extensions.load_balancing_policies.round_robin.v3.RoundRobin":
		var m roundrobinv3.RoundRobin
		if err := unmarshal(&m); err != nil {
			return false, err
		}
		out.LBPolicy = state.LBRoundRobin
		if err := localityLB(out, m.GetLocalityLbConfig()); err != nil {
			return false, err
		}
	case typeURLPrefix + "envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest":
		var m leastrequestv3.LeastRequest
		if err := unmarshal(&m); err != nil {
			return false, err
		}
		out.LBPolicy = state.LBLeastRequest
		if err := leastRequest(out, m.GetChoiceCount(), m.GetActiveRequestBias().GetDefaultValue(), m.GetActiveRequestBias() != nil); err != nil {
			return false, err
		}
		if err := localityLB(out, m.GetLocalityLbConfig()); err != nil {
			return false, err
		}
	case typeURLPrefix + "envoy.extensions.load_balancing_policies.random.v3.Random":
		var m randomv3.Random
		if err := unmarshal(&m); err != nil {
			return false, err
		}
		out.LBPolicy = state.LBRandom
		if err := localityLB(out, m.GetLocalityLbConfig()); err != nil {
			return false, err
		}
	case typeURLPrefix + "envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash":
		var m ringhashv3.RingHash
		if err := unmarshal(&m); err != nil {
			return false, err
		}
		switch m.GetHashFunction() {
		case ringhashv3.RingHash_DEFAULT_HASH, ringhashv3.RingHash_XX_HASH:
		default:
			return false, errAt("hash_function", "%v is not supported, only XX_HASH", m.GetHashFunction())
		}
		if m.GetUseHostnameForHashing() || m.GetConsistentHashingLbConfig().GetUseHostnameForHashing() {
			return false, errAt("use_hostname_for_hashing", "is not supported")
		}
		out.LBPolicy = state.LBRingHash
		if err := ringSizes(out, m.GetMinimumRingSize(), m.GetMaximumRingSize()); err != nil {
			return false, err
		}
		out.LocalityWeighted = out.LocalityWeighted || m.GetLocalityWeightedLbConfig() != nil
	case typeURLPrefix + "envoy.extensions.load_balancing_policies.maglev.v3.Maglev":
		var m maglevv3.Maglev
		if err := unmarshal(&m); err != nil {
			return false, err
		}
		if m.GetConsistentHashingLbConfig().GetUseHostnameForHashing() {
			return false, errAt("consistent_hashing_lb_config.use_hostname_for_hashing", "is not supported")
		}
		out.LBPolicy = state.LBMaglev
		if err := maglevTable(out, m.GetTableSize()); err != nil {
			return false, err
		}
		out.LocalityWeighted = out.LocalityWeighted || m.GetLocalityWeightedLbConfig() != nil
	case typeURLPrefix + "envoy.extensions.load_balancing_policies.wrr_locality.v3.WrrLocality":
		// gRPC-xDS control planes wrap the endpoint picking policy in
		// wrr_locality (gRFC A52): localities by weight, then the child
		// policy within the locality. The child list is ordered like the
		// outer one: the first supported entry wins.
		var m wrrlocalityv3.WrrLocality
		if err := unmarshal(&m); err != nil {
			return false, err
		}
		for i, p := range m.GetEndpointPickingPolicy().GetPolicies() {
			tc := p.GetTypedExtensionConfig().GetTypedConfig()
			if tc == nil {
				return false, errAt(fmt.Sprintf("endpoint_picking_policy.policies[%d].typed_extension_config.typed_config", i), "is required")
			}
			ok, err := typedLB(out, tc.GetTypeUrl(), tc.UnmarshalTo)
			if err != nil {
				return false, at(fmt.Sprintf("endpoint_picking_policy.policies[%d].typed_extension_config.typed_config", i), err)
			}
			if ok {
				out.LocalityWeighted = true
				return true, nil
			}
		}
		return false, nil // no supported child: try the next outer policy
	default:
		return false, nil
	}
	return true, nil
}

// localityLB reads the typed policies' locality_lb_config. Zone-aware
// routing is rejected as in common_lb_config: it would change which
// locality, and so which host, is picked.
func localityLB(out *state.Cluster, cfg *commonv3.LocalityLbConfig) error {
	if cfg.GetZoneAwareLbConfig() != nil {
		return errAt("locality_lb_config.zone_aware_lb_config", "is not supported")
	}
	out.LocalityWeighted = out.LocalityWeighted || cfg.GetLocalityWeightedLbConfig() != nil
	return nil
}

func leastRequest(out *state.Cluster, choice *wrapperspb.UInt32Value, bias float64, biasSet bool) error {
	if choice != nil {
		if choice.GetValue() < 2 {
			return errAt("choice_count", "must be at least 2, got %d", choice.GetValue())
		}
		out.ChoiceCount = choice.GetValue()
	}
	if biasSet {
		if bias < 0 {
			return errAt("active_request_bias", "must not be negative")
		}
		out.ActiveRequestBias = bias
	}
	return nil
}

func ringSizes(out *state.Cluster, lo, hi *wrapperspb.UInt64Value) error {
	if lo != nil {
		out.MinRingSize = lo.GetValue()
	}
	if hi != nil {
		out.MaxRingSize = hi.GetValue()
	}
	switch {
	case out.MinRingSize == 0:
		return errAt("minimum_ring_size", "must be greater than 0")
	case out.MaxRingSize > maxRingSize:
		return errAt("maximum_ring_size", "%d exceeds %d", out.MaxRingSize, maxRingSize)
	case out.MinRingSize > out.MaxRingSize:
		return errAt("minimum_ring_size", "%d is greater than maximum_ring_size %d", out.MinRingSize, out.MaxRingSize)
	}
	return nil
}

// maglevTable checks the table size, which must be prime for Maglev's
// permutation to visit every slot.
func maglevTable(out *state.Cluster, size *wrapperspb.UInt64Value) error {
	if size == nil {
		return nil
	}
	n := size.GetValue()
	if n > maxMaglevTableSize {
		return errAt("table_size", "%d exceeds %d", n, maxMaglevTableSize)
	}
	if !isPrime(n) {
		return errAt("table_size", "%d is not prime", n)
	}
	out.MaglevTableSize = n
	return nil
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}
