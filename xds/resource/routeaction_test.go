package resource

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// TestDecodeWeightedClusterFilterOverrides: typed_per_filter_config of a
// weighted cluster entry and of the route configuration are decoded (they
// were ignored), with their errors at their field paths.
func TestDecodeWeightedClusterFilterOverrides(t *testing.T) {
	rc := simpleRouteConfig()
	rc.TypedPerFilterConfig = map[string]*anypb.Any{"rbac": mustAny(t, &routev3.FilterConfig{Disabled: true})}
	rc.VirtualHosts[0].Routes[0].Action = &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
			{Name: "a", Weight: wrapperspb.UInt32(1)},
			{Name: "b", Weight: wrapperspb.UInt32(1), TypedPerFilterConfig: map[string]*anypb.Any{
				"rbac": mustAny(t, &routev3.FilterConfig{Disabled: true}),
				"lrl":  mustAny(t, &lrlv3.LocalRateLimit{StatPrefix: "b"}),
			}},
		}}},
	}}
	got, err := DecodeRouteConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	if o := got.FilterOverrides["rbac"]; o == nil || !o.Disabled {
		t.Errorf("route configuration override = %+v", o)
	}
	wcs := got.VirtualHosts[0].Routes[0].Action.WeightedClusters
	if len(wcs[0].FilterOverrides) != 0 {
		t.Errorf("entry a overrides = %+v", wcs[0].FilterOverrides)
	}
	if o := wcs[1].FilterOverrides["rbac"]; o == nil || !o.Disabled {
		t.Errorf("entry b rbac override = %+v", o)
	}
	if o := wcs[1].FilterOverrides["lrl"]; o == nil || o.LocalRateLimit == nil || o.LocalRateLimit.StatPrefix != "b" {
		t.Errorf("entry b lrl override = %+v", o)
	}

	rc.VirtualHosts[0].Routes[0].GetRoute().GetWeightedClusters().Clusters[1].TypedPerFilterConfig["lrl"] = mustAny(t, &lrlv3.LocalRateLimit{})
	_, err = DecodeRouteConfig(rc)
	wantErr(t, err, `weighted_clusters.clusters[1].typed_per_filter_config["lrl"]: local_ratelimit: stat_prefix: is required`)
}
