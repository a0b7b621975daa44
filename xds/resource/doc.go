// Package resource decodes Envoy v3 xDS protos (Listener,
// RouteConfiguration, Cluster, ClusterLoadAssignment) and the Istio
// Workload API protos (istio.workload.Address, istio.security.Authorization;
// workload*.go) into validated state types. It is the only place protos are interpreted: errors name the
// resource and the field path that is wrong, and nothing below xds imports
// Envoy protos.
//
// Fields we cannot honour are rejected with an error rather than ignored
// whenever ignoring them could route traffic somewhere the configuration
// did not intend (runtime_fraction, SAN matching, subset LB, ...). Fields
// that only add behaviour we do not have yet (retry_policy, rate_limits,
// cors) are accepted.
//
// resource imports only state and the proto packages; it must not import
// dataplane, lb, policy or the xds client.
package resource
