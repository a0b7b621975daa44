// Package workloadtest is a Workload API control plane for tests: a real
// go-control-plane delta ADS server on loopback whose caches hold
// istio.workload.Address and istio.security.Authorization resources, as
// istiod serves them to ztunnel. go-control-plane's snapshot cache only
// knows Envoy types, so each Istio type gets a LinearCache (which takes
// any proto) behind a MuxCache keyed by type URL.
//
// It is imported by tests only (xds, node, integration); it imports
// go-control-plane, grpc and the generated Istio protos, never meshlet's
// runtime packages.
package workloadtest
