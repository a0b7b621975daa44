package resource

import (
	"fmt"
	"net/netip"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	internalv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/internal_upstream/v3"

	"github.com/meshlet/meshlet/state"
)

// Istio configures HBONE origination for Envoy (sidecars, waypoints) with
// in-process plumbing instead of a tunnel option on the cluster:
//
//	cluster X (the service): transport_socket internal_upstream(raw_buffer)
//	  endpoint: envoy_internal_address{server_listener_name: connect_originate,
//	            endpoint_id: "10.0.0.5:80"}
//	            metadata envoy.filters.listener.original_dst: {local: "10.0.0.5:80"}
//	listener connect_originate: internal_listener, original_dst listener filter,
//	  tcp_proxy{cluster: connect_originate,
//	            tunneling_config{hostname: "%DOWNSTREAM_LOCAL_ADDRESS%"}}
//	cluster connect_originate: ORIGINAL_DST, upstream_port_override 15008,
//	  UpstreamTlsContext (SDS "default" + "ROOTCA"), HTTP/2 allow_connect
//
// meshlet decodes each piece into the state model (InternalEndpoint,
// InternalListener, HBONE.Internal, OriginalDstPortOverride) and the HBONE
// client walks the chain per connection: CONNECT to the endpoint's address,
// sent to its IP at the override port, with the tunnel cluster's mTLS.
const (
	typeInternalUpstream    = "type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport"
	originalDstMetadataKey  = "envoy.filters.listener.original_dst"
	downstreamLocalAddress  = "%DOWNSTREAM_LOCAL_ADDRESS%"
	listenerFilterOrigDst   = "envoy.filters.listener.original_dst"
	typeListenerFilterOrDst = "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"
)

// isInternalUpstream reports whether ts is an internal_upstream socket.
func isInternalUpstream(ts *corev3.TransportSocket) bool {
	return ts.GetTypedConfig().GetTypeUrl() == typeInternalUpstream
}

// unwrapInternalUpstream returns the socket an internal_upstream wraps (nil
// for raw_buffer) and ts unchanged otherwise. The passthrough_metadata
// needs no decoding: the HBONE dial reads the endpoint's metadata itself.
func unwrapInternalUpstream(ts *corev3.TransportSocket) (*corev3.TransportSocket, error) {
	if !isInternalUpstream(ts) {
		return ts, nil
	}
	var iu internalv3.InternalUpstreamTransport
	if err := ts.GetTypedConfig().UnmarshalTo(&iu); err != nil {
		return nil, errAt("typed_config", "%v", err)
	}
	return iu.GetTransportSocket(), nil
}

// clusterIsInternal reports whether c's connections go to internal
// listeners: its transport socket, or one of its transport socket matches,
// is internal_upstream.
func clusterIsInternal(c *clusterv3.Cluster) bool {
	if isInternalUpstream(c.GetTransportSocket()) {
		return true
	}
	for _, m := range c.GetTransportSocketMatches() {
		if isInternalUpstream(m.GetTransportSocket()) {
			return true
		}
	}
	return false
}

// decodeInternalEndpoint decodes an envoy_internal_address endpoint. The
// destination is original_dst metadata "local" (what Istio's listener
// filter would restore as the downstream local address), else endpoint_id.
func decodeInternalEndpoint(out state.Endpoint, lb *endpointv3.LbEndpoint, ia *corev3.EnvoyInternalAddress) (state.Endpoint, error) {
	const path = "endpoint.address.envoy_internal_address"
	name := ia.GetServerListenerName()
	if name == "" {
		return out, errAt(path+".server_listener_name", "is required")
	}
	md := lb.GetMetadata().GetFilterMetadata()[originalDstMetadataKey].GetFields()
	dest, field := ia.GetEndpointId(), path+".endpoint_id"
	if local := md["local"].GetStringValue(); local != "" {
		dest, field = local, "metadata.filter_metadata."+originalDstMetadataKey+".local"
	}
	ap, err := netip.ParseAddrPort(dest)
	if err != nil || ap.Port() == 0 {
		return out, errAt(field, "%q must be ip:port (the destination behind the tunnel)", dest)
	}
	ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	out.Address, out.Port = ap.String(), uint32(ap.Port())
	ie := &state.InternalEndpoint{Listener: name}
	if w := md["waypoint"].GetStringValue(); w != "" {
		if _, err := parseIPOrAddrPort(w); err != nil {
			return out, errAt("metadata.filter_metadata."+originalDstMetadataKey+".waypoint", "%q must be ip or ip:port", w)
		}
		ie.Waypoint = w
	}
	out.Internal = ie
	return out, nil
}

func parseIPOrAddrPort(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return netip.AddrPortFrom(ip, 0), nil
}

// decodeInternalListener accepts the internal listener shape istiod
// generates for HBONE origination and nothing else: other internal
// listeners would need an in-process listener the data plane does not run.
func decodeInternalListener(l *listenerv3.Listener) (*state.Listener, error) {
	out := &state.Listener{Name: l.GetName(), Internal: &state.InternalListener{}}
	for i, f := range l.GetListenerFilters() {
		// Istio's original_dst filter restores the endpoint's address as
		// the downstream local address; the HBONE dial uses it directly.
		if f.GetName() != listenerFilterOrigDst && f.GetTypedConfig().GetTypeUrl() != typeListenerFilterOrDst {
			return nil, errAt(fmt.Sprintf("listener_filters[%d]", i), "only original_dst is supported on an internal listener")
		}
	}
	if l.GetDefaultFilterChain() != nil || len(l.GetFilterChains()) != 1 {
		return nil, errAt("filter_chains", "an internal listener must have exactly one filter chain (HBONE origination)")
	}
	fc := l.GetFilterChains()[0]
	if fc.GetTransportSocket() != nil {
		return nil, errAt("filter_chains[0].transport_socket", "is not supported on an internal listener")
	}
	if len(fc.GetFilters()) != 1 || fc.GetFilters()[0].GetTypedConfig().GetTypeUrl() != typeTCPProxy {
		return nil, errAt("filter_chains[0].filters", "an internal listener must have exactly one tcp_proxy filter")
	}
	var p tcpproxyv3.TcpProxy
	if err := fc.GetFilters()[0].GetTypedConfig().UnmarshalTo(&p); err != nil {
		return nil, errAt("filter_chains[0].filters[0].typed_config", "%v", err)
	}
	const path = "filter_chains[0].filters[0].typed_config"
	cluster := p.GetCluster()
	if cluster == "" {
		return nil, errAt(path+".cluster", "is required (weighted clusters are not supported here)")
	}
	out.Internal.Cluster = cluster
	tc := p.GetTunnelingConfig()
	if tc == nil {
		return nil, errAt(path+".tunneling_config", "is required: internal listeners are supported only for HBONE origination")
	}
	if tc.GetUsePost() {
		return nil, errAt(path+".tunneling_config.use_post", "is not supported: HBONE uses CONNECT")
	}
	host := tc.GetHostname()
	switch {
	case host == downstreamLocalAddress:
	case strings.Contains(host, "%"):
		return nil, errAt(path+".tunneling_config.hostname", "%q: only %s is supported as a substitution", host, downstreamLocalAddress)
	case host == "":
		return nil, errAt(path+".tunneling_config.hostname", "is required")
	}
	out.Internal.Hostname = host
	for i, h := range tc.GetHeadersToAdd() {
		k, v := strings.ToLower(h.GetHeader().GetKey()), h.GetHeader().GetValue()
		hp := fmt.Sprintf("%s.tunneling_config.headers_to_add[%d]", path, i)
		if k == "" || strings.HasPrefix(k, ":") {
			return nil, errAt(hp+".header.key", "must be a regular header name")
		}
		if strings.Contains(v, "%") {
			return nil, errAt(hp+".header.value", "substitution formatters are not supported")
		}
		out.Internal.Headers = append(out.Internal.Headers, state.TunnelHeader{Name: k, Value: v})
	}
	return out, nil
}

// decodeOriginalDstTunnel reads the original_dst_lb_config fields Istio's
// HBONE tunnel cluster sets: upstream_port_override and the waypoint
// metadata_key.
func decodeOriginalDstTunnel(out *state.Cluster, cfg *clusterv3.Cluster_OriginalDstLbConfig) error {
	if po := cfg.GetUpstreamPortOverride(); po != nil {
		if po.GetValue() < 1 || po.GetValue() > 65535 {
			return errAt("original_dst_lb_config.upstream_port_override", "%d is not a port", po.GetValue())
		}
		out.OriginalDstPortOverride = po.GetValue()
	}
	if mk := cfg.GetMetadataKey(); mk != nil {
		segs := mk.GetPath()
		if mk.GetKey() != originalDstMetadataKey || len(segs) != 1 || segs[0].GetKey() != "waypoint" {
			return errAt("original_dst_lb_config.metadata_key", "only %s/waypoint (Istio's) is supported", originalDstMetadataKey)
		}
		out.OriginalDstWaypointKey = true
	}
	return nil
}
