package resource

import (
	"errors"
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

// ErrNotForProxy marks a valid resource that is meant for another kind of
// xDS client (an api_listener for proxyless gRPC): the client skips it
// instead of rejecting the update.
var ErrNotForProxy = errors.New("resource is for proxyless clients; skipped")

// Decode decodes one xDS resource of the given type URL (state.TypeListener,
// TypeRoute, TypeCluster, TypeEndpoint, TypeSecret) into *state.Listener,
// *state.RouteConfig, *state.Cluster, *state.ClusterLoadAssignment or
// *state.Secret. name is
// the resource name (even when err != nil, if it could be read). err names
// the resource and the field path, e.g.
// `listener "in": filter_chains[0].filters[0]: tcp_proxy: cluster_specifier is required`.
func Decode(typeURL string, raw *anypb.Any) (name string, value any, err error) {
	if raw == nil {
		return "", nil, fmt.Errorf("resource of type %s: missing", typeURL)
	}
	if raw.GetTypeUrl() != typeURL {
		return "", nil, fmt.Errorf("resource of type %s: got type %s", typeURL, raw.GetTypeUrl())
	}
	switch typeURL {
	case state.TypeListener:
		var m listenerv3.Listener
		if err := proto.Unmarshal(raw.GetValue(), &m); err != nil {
			return "", nil, fmt.Errorf("listener: %w", err)
		}
		v, err := DecodeListener(&m)
		return m.GetName(), nilIfErr(v, err), err
	case state.TypeRoute:
		var m routev3.RouteConfiguration
		if err := proto.Unmarshal(raw.GetValue(), &m); err != nil {
			return "", nil, fmt.Errorf("route_configuration: %w", err)
		}
		v, err := DecodeRouteConfig(&m)
		return m.GetName(), nilIfErr(v, err), err
	case state.TypeCluster:
		var m clusterv3.Cluster
		if err := proto.Unmarshal(raw.GetValue(), &m); err != nil {
			return "", nil, fmt.Errorf("cluster: %w", err)
		}
		v, err := DecodeCluster(&m)
		return m.GetName(), nilIfErr(v, err), err
	case state.TypeSecret:
		var m tlsv3.Secret
		if err := proto.Unmarshal(raw.GetValue(), &m); err != nil {
			return "", nil, fmt.Errorf("secret: %w", err)
		}
		v, err := DecodeSecret(&m)
		return m.GetName(), nilIfErr(v, err), err
	case state.TypeEndpoint:
		var m endpointv3.ClusterLoadAssignment
		if err := proto.Unmarshal(raw.GetValue(), &m); err != nil {
			return "", nil, fmt.Errorf("cluster_load_assignment: %w", err)
		}
		v, err := DecodeEndpoints(&m)
		return m.GetClusterName(), nilIfErr(v, err), err
	case state.TypeAddress:
		return decodeAddressAny(raw)
	case state.TypeAuthorization:
		return decodeAuthorizationAny(raw)
	}
	return "", nil, fmt.Errorf("resource type %s is not supported", typeURL)
}

// nilIfErr keeps a typed nil pointer from turning into a non-nil any.
func nilIfErr[T any](v *T, err error) any {
	if err != nil || v == nil {
		return nil
	}
	return v
}

// References returns the names of the resources a decoded resource depends
// on: RDS route configuration names for a listener, the EDS service name for
// an EDS cluster, nothing for others. Names are deduplicated, in first-seen
// order.
func References(value any) (routeNames, edsNames []string) {
	switch v := value.(type) {
	case *state.Listener:
		if v == nil {
			return nil, nil
		}
		seen := map[string]bool{}
		add := func(fc *state.FilterChain) {
			if fc == nil || fc.HTTP == nil || fc.HTTP.RDSName == "" || seen[fc.HTTP.RDSName] {
				return
			}
			seen[fc.HTTP.RDSName] = true
			routeNames = append(routeNames, fc.HTTP.RDSName)
		}
		for _, fc := range v.FilterChains {
			add(fc)
		}
		add(v.DefaultFilterChain)
	case *state.Cluster:
		if v == nil || v.Type != state.ClusterEDS {
			return nil, nil
		}
		name := v.EDSServiceName
		if name == "" {
			name = v.Name
		}
		edsNames = []string{name}
	}
	return routeNames, edsNames
}
