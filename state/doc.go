// Package state owns meshlet's internal configuration model and the current
// snapshot of it.
//
// The types here are the validated, proto-free form of the xDS resources the
// proxy understands (listeners, route configurations, clusters, endpoint
// assignments). xds/resource decodes Envoy protos into them; config builds them
// from the bootstrap file; dataplane, lb and policy read them. Values reachable
// from a published Snapshot are immutable: an update builds new values and
// swaps the snapshot pointer, so readers never lock.
//
// state imports no Envoy protos and no other meshlet package.
package state
