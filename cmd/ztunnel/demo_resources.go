package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	cluster "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpoint "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	route "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	fault "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	router "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcm "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

// Names of what the traffic-policy steps add to the demo's resources.
const (
	// faultyName names the "faulty service": a second listener of the same
	// proxy (with its route configuration) running the HTTP fault filter in
	// front of echo-v1, and the cluster whose endpoint is that listener.
	faultyName = "faulty"
	// faultyRoute is the demo route sending /faulty/ to the faulty cluster.
	faultyRoute  = "faulty"
	faultyPrefix = "/faulty/"
	faultFilter  = "envoy.filters.http.fault"
	// mirrorCluster is the third echo service, the target of the mirror.
	mirrorCluster = "echo-mirror"
)

// resourceSet is a deep copy of the control plane's resources, grouped by
// type URL, that a step edits before pushing it.
type resourceSet map[string][]types.Resource

func (d *demoRun) resources() resourceSet {
	rs := resourceSet{}
	for typ, list := range d.cp.Resources() {
		for _, r := range list {
			rs[typ] = append(rs[typ], proto.Clone(r).(types.Resource))
		}
	}
	return rs
}

// put adds r, replacing a resource of the same type and name.
func (rs resourceSet) put(typ string, r types.Resource) {
	name := cachev3.GetResourceName(r)
	for i, old := range rs[typ] {
		if cachev3.GetResourceName(old) == name {
			rs[typ][i] = r
			return
		}
	}
	rs[typ] = append(rs[typ], r)
}

func (rs resourceSet) all() []types.Resource {
	var out []types.Resource
	for _, list := range rs {
		out = append(out, list...)
	}
	return out
}

// routeConfig returns the named route configuration of the set.
func (rs resourceSet) routeConfig(name string) *route.RouteConfiguration {
	for _, r := range rs[resource.RouteType] {
		if rc, ok := r.(*route.RouteConfiguration); ok && rc.GetName() == name {
			return rc
		}
	}
	return nil
}

// route returns the named route of the named route configuration, or an
// error naming both.
func (rs resourceSet) route(config, name string) (*route.Route, error) {
	for _, vh := range rs.routeConfig(config).GetVirtualHosts() {
		for _, rt := range vh.GetRoutes() {
			if rt.GetName() == name {
				return rt, nil
			}
		}
	}
	return nil, fmt.Errorf("route %q not found in route configuration %q", name, config)
}

// push publishes rs as a new snapshot and waits until the proxy has
// applied that version of every resource type and until done (when set)
// holds for its state. It prints what was pushed.
func (d *demoRun) push(ctx context.Context, rs resourceSet, what string, done func(*state.Snapshot) bool) error {
	if err := d.cp.SetResources(rs.all()...); err != nil {
		return fmt.Errorf("push %s: %w", what, err)
	}
	version := d.cp.Version()
	pushed := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		snap := d.proxy.store.Load()
		applied := true
		for _, typ := range []string{state.TypeListener, state.TypeRoute, state.TypeCluster, state.TypeEndpoint} {
			applied = applied && snap.Versions[typ] == version
		}
		if applied && (done == nil || done(snap)) {
			d.say("    pushed snapshot version %s: %s (applied after %v)", version, what, time.Since(pushed).Round(time.Millisecond))
			return nil
		}
		select {
		case <-ctx.Done():
			nack := ""
			if d.proxy.xds != nil {
				if n := d.proxy.xds.Status().LastNACK; n != "" {
					nack = "; last NACK: " + n
				}
			}
			return fmt.Errorf("push %s: snapshot version %s not applied by the proxy within 5s%s", what, version, nack)
		case <-t.C:
		}
	}
}

// ---- resource builders ----

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		// Only reachable with a message type missing from the binary.
		panic(fmt.Sprintf("demo: anypb.New(%T): %v", m, err))
	}
	return a
}

func adsSource() *core.ConfigSource {
	return &core.ConfigSource{
		ResourceApiVersion:    core.ApiVersion_V3,
		ConfigSourceSpecifier: &core.ConfigSource_Ads{Ads: &core.AggregatedConfigSource{}},
	}
}

func percentOf(n uint32) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: typev3.FractionalPercent_HUNDRED}
}

// faultyListener is the faulty service: an HTTP listener on port whose
// connection manager runs the fault filter, unconfigured (it does nothing
// until a route's typed_per_filter_config gives it a fault), before the
// router, with routes from RDS.
func faultyListener(port int) *listener.Listener {
	m := &hcm.HttpConnectionManager{
		StatPrefix: faultyName,
		CodecType:  hcm.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcm.HttpConnectionManager_Rds{Rds: &hcm.Rds{
			RouteConfigName: faultyName, ConfigSource: adsSource()}},
		HttpFilters: []*hcm.HttpFilter{
			{Name: faultFilter, ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&fault.HTTPFault{})}},
			{Name: "envoy.filters.http.router", ConfigType: &hcm.HttpFilter_TypedConfig{TypedConfig: mustAny(&router.Router{})}},
		},
	}
	return &listener.Listener{
		Name: faultyName,
		Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
			Address: "127.0.0.1", PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)}}}},
		FilterChains: []*listener.FilterChain{{Filters: []*listener.Filter{{
			Name:       "envoy.filters.network.http_connection_manager",
			ConfigType: &listener.Filter_TypedConfig{TypedConfig: mustAny(m)},
		}}}},
	}
}

// faultyRoutes is the faulty service's route configuration: everything to
// echo-v1, with f (nil: none) as the route's fault.
func faultyRoutes(f *fault.HTTPFault) *route.RouteConfiguration {
	rt := &route.Route{
		Name:   faultyName,
		Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: "/"}},
		Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: "echo-v1"}}},
	}
	if f != nil {
		rt.TypedPerFilterConfig = map[string]*anypb.Any{faultFilter: mustAny(f)}
	}
	return &route.RouteConfiguration{Name: faultyName, VirtualHosts: []*route.VirtualHost{{
		Name: faultyName, Domains: []string{"*"}, Routes: []*route.Route{rt}}}}
}

func abortFault(status, pct uint32) *fault.HTTPFault {
	return &fault.HTTPFault{Abort: &fault.FaultAbort{
		ErrorType: &fault.FaultAbort_HttpStatus{HttpStatus: status}, Percentage: percentOf(pct)}}
}

func delayFault(d time.Duration, pct uint32) *fault.HTTPFault {
	return &fault.HTTPFault{Delay: &faultcommon.FaultDelay{
		FaultDelaySecifier: &faultcommon.FaultDelay_FixedDelay{FixedDelay: durationpb.New(d)}, Percentage: percentOf(pct)}}
}

// edsCluster is an HTTP/1.1 EDS cluster like the demo's echo clusters.
func edsCluster(name string) *cluster.Cluster {
	return &cluster.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &cluster.Cluster_Type{Type: cluster.Cluster_EDS},
		EdsClusterConfig:     &cluster.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       durationpb.New(time.Second),
		LbPolicy:             cluster.Cluster_ROUND_ROBIN,
	}
}

func loopbackEndpoints(name string, port int) *endpoint.ClusterLoadAssignment {
	return &endpoint.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints: []*endpoint.LocalityLbEndpoints{{LbEndpoints: []*endpoint.LbEndpoint{{
			HostIdentifier: &endpoint.LbEndpoint_Endpoint{Endpoint: &endpoint.Endpoint{
				Address: &core.Address{Address: &core.Address_SocketAddress{SocketAddress: &core.SocketAddress{
					Address: "127.0.0.1", PortSpecifier: &core.SocketAddress_PortValue{PortValue: uint32(port)}}}},
			}},
		}}}},
	}
}

// addFaultyService adds the faulty listener on port, its routes (with f),
// the faulty cluster pointing at it, and the demo route /faulty/ in front
// of the demo virtual host's routes.
func (rs resourceSet) addFaultyService(port int, f *fault.HTTPFault) error {
	rc := rs.routeConfig(demoRouteConfig)
	if rc == nil || len(rc.GetVirtualHosts()) == 0 {
		return fmt.Errorf("route configuration %q with a virtual host not found", demoRouteConfig)
	}
	faulty := edsCluster(faultyName)
	// Envoy's default max_retries circuit breaker allows 3 retries in
	// flight per cluster; with 8 concurrent clients at 30% faults that
	// overflows now and then and the overflowing 503s reach the client.
	faulty.CircuitBreakers = &cluster.CircuitBreakers{Thresholds: []*cluster.CircuitBreakers_Thresholds{{
		MaxRetries: wrapperspb.UInt32(100)}}}
	rs.put(resource.ListenerType, faultyListener(port))
	rs.put(resource.RouteType, faultyRoutes(f))
	rs.put(resource.ClusterType, faulty)
	rs.put(resource.EndpointType, loopbackEndpoints(faultyName, port))

	vh := rc.GetVirtualHosts()[0]
	vh.Routes = append([]*route.Route{{
		Name:   faultyRoute,
		Match:  &route.RouteMatch{PathSpecifier: &route.RouteMatch_Prefix{Prefix: faultyPrefix}},
		Action: &route.Route_Route{Route: &route.RouteAction{ClusterSpecifier: &route.RouteAction_Cluster{Cluster: faultyName}}},
	}}, vh.GetRoutes()...)
	return nil
}

// setFault replaces the faulty service's fault.
func (rs resourceSet) setFault(f *fault.HTTPFault) { rs.put(resource.RouteType, faultyRoutes(f)) }

// faultString describes a fault for the output.
func faultString(f *fault.HTTPFault) string {
	var parts []string
	if d := f.GetDelay(); d != nil {
		parts = append(parts, fmt.Sprintf("delay %v at %d%%", d.GetFixedDelay().AsDuration(), d.GetPercentage().GetNumerator()))
	}
	if a := f.GetAbort(); a != nil {
		parts = append(parts, fmt.Sprintf("abort %d at %d%%", a.GetHttpStatus(), a.GetPercentage().GetNumerator()))
	}
	if len(parts) == 0 {
		return "no fault"
	}
	return strings.Join(parts, ", ")
}
