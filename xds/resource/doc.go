// Package resource decodes Envoy v3 xDS protos (Listener,
// RouteConfiguration, Cluster, ClusterLoadAssignment) into validated state
// types. It is the only place protos are interpreted: errors name the
// resource and the field path that is wrong, and nothing below xds imports
// Envoy protos.
package resource
