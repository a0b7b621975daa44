//lint:file-ignore SA1019 the legacy common_lb_config form is what is tested.

package resource

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	commonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/common/v3"
	leastrequestv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	randomv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/random/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	"google.golang.org/protobuf/proto"
)

// TestDecodeLBConsistentRejects: zone-aware routing and hashing by hostname
// change which host is picked, so both NACK in the legacy and the typed
// forms alike.
func TestDecodeLBConsistentRejects(t *testing.T) {
	zoneAware := &commonv3.LocalityLbConfig{LocalityConfigSpecifier: &commonv3.LocalityLbConfig_ZoneAwareLbConfig_{ZoneAwareLbConfig: &commonv3.LocalityLbConfig_ZoneAwareLbConfig{}}}
	typed := func(t *testing.T, m proto.Message) *clusterv3.Cluster {
		c := edsCluster()
		c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{typedPolicy(t, mustAny(t, m))}}
		return c
	}
	legacyHostname := func(p clusterv3.Cluster_LbPolicy) *clusterv3.Cluster {
		c := edsCluster()
		c.LbPolicy = p
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{ConsistentHashingLbConfig: &clusterv3.Cluster_CommonLbConfig_ConsistentHashingLbConfig{UseHostnameForHashing: true}}
		return c
	}
	tests := []struct {
		name string
		in   func(t *testing.T) *clusterv3.Cluster
		want string // "" = accepted
	}{
		{"legacy zone aware", func(t *testing.T) *clusterv3.Cluster {
			c := edsCluster()
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_ZoneAwareLbConfig_{ZoneAwareLbConfig: &clusterv3.Cluster_CommonLbConfig_ZoneAwareLbConfig{}}}
			return c
		}, "common_lb_config.zone_aware_lb_config: is not supported"},
		{"round robin zone aware", func(t *testing.T) *clusterv3.Cluster {
			return typed(t, &roundrobinv3.RoundRobin{LocalityLbConfig: zoneAware})
		}, "load_balancing_policy.policies[0].typed_extension_config.typed_config.locality_lb_config.zone_aware_lb_config: is not supported"},
		{"least request zone aware", func(t *testing.T) *clusterv3.Cluster {
			return typed(t, &leastrequestv3.LeastRequest{LocalityLbConfig: zoneAware})
		}, "locality_lb_config.zone_aware_lb_config: is not supported"},
		{"random zone aware", func(t *testing.T) *clusterv3.Cluster {
			return typed(t, &randomv3.Random{LocalityLbConfig: zoneAware})
		}, "locality_lb_config.zone_aware_lb_config: is not supported"},
		{"legacy ring hash by hostname", func(t *testing.T) *clusterv3.Cluster {
			return legacyHostname(clusterv3.Cluster_RING_HASH)
		}, "common_lb_config.consistent_hashing_lb_config.use_hostname_for_hashing: is not supported"},
		{"legacy maglev by hostname", func(t *testing.T) *clusterv3.Cluster {
			return legacyHostname(clusterv3.Cluster_MAGLEV)
		}, "common_lb_config.consistent_hashing_lb_config.use_hostname_for_hashing: is not supported"},
		{"legacy round robin ignores hashing config", func(t *testing.T) *clusterv3.Cluster {
			return legacyHostname(clusterv3.Cluster_ROUND_ROBIN)
		}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeCluster(tc.in(t))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantErr(t, err, tc.want)
		})
	}
}
