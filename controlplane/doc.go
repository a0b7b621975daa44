// Package controlplane is an embedded xDS management server for demos and
// tests: go-control-plane's ADS server (state-of-the-world and delta on the
// same gRPC service) over its snapshot cache, fed from a directory of YAML
// files that it watches for changes.
//
// File format: every *.yaml / *.yml / *.json file in the directory holds a
// top-level `resources:` list of Envoy v3 resources written as protojson in
// YAML, each with an "@type" (Listener, RouteConfiguration, Cluster,
// ClusterLoadAssignment). ${NAME} placeholders are replaced from the map the
// caller gives before parsing; an unknown placeholder is an error.
//
// Every node gets the same snapshot. A file that fails to load is logged with
// its name and the last good snapshot keeps being served.
//
// controlplane imports go-control-plane and Envoy protos; it imports no
// meshlet package and the proxy never imports it (only cmd and tests do).
package controlplane
