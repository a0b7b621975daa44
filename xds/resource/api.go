package resource

import (
	"google.golang.org/protobuf/types/known/anypb"
)

// Decode decodes one xDS resource of the given type URL (state.TypeListener,
// TypeRoute, TypeCluster, TypeEndpoint) into *state.Listener,
// *state.RouteConfig, *state.Cluster or *state.ClusterLoadAssignment. name is
// the resource name (even when err != nil, if it could be read). err names
// the resource and the field path, e.g.
// `listener "in": filter_chains[0].filters[0]: tcp_proxy: cluster_specifier is required`.
func Decode(typeURL string, raw *anypb.Any) (name string, value any, err error) {
	panic("resource.Decode: not implemented")
}

// References returns the names of the resources a decoded resource depends
// on: RDS route configuration names for a listener, the EDS service name for
// an EDS cluster, nothing for others.
func References(value any) (routeNames, edsNames []string) {
	panic("resource.References: not implemented")
}
