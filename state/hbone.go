package state

// InternalListener is an Envoy internal listener (internal_listener set):
// it opens no socket and is reached in-process by clusters whose endpoints
// name it in envoy_internal_address. meshlet supports the one shape istiod
// generates for HBONE origination ("connect_originate"): a tcp_proxy with
// tunneling_config whose cluster is an ORIGINAL_DST mTLS HTTP/2 cluster.
// The HBONE client carries it out; the data plane never serves it.
type InternalListener struct {
	// Cluster is the tcp_proxy's cluster, the tunnel endpoint's cluster.
	Cluster string
	// Hostname is tunneling_config.hostname, the CONNECT :authority;
	// "%DOWNSTREAM_LOCAL_ADDRESS%" (Istio's) stands for the endpoint's
	// address.
	Hostname string
	// Headers are tunneling_config.headers_to_add with static values.
	Headers []TunnelHeader
}

// TunnelHeader is one header added to the CONNECT request.
type TunnelHeader struct {
	Name, Value string
}

// InternalEndpoint marks an endpoint reached through an internal listener
// (envoy_internal_address); its Endpoint.Address is the destination behind
// the tunnel (endpoint_id, or the original_dst "local" metadata).
type InternalEndpoint struct {
	// Listener is server_listener_name.
	Listener string
	// Waypoint, when set, is the tunnel endpoint (ip:port) to use instead
	// of the destination's own HBONE port: filter_metadata
	// ["envoy.filters.listener.original_dst"].waypoint, read when the
	// tunnel cluster's original_dst_lb_config.metadata_key names it.
	Waypoint string
}
