// Package xds owns the ADS client: one gRPC stream to a control plane
// (envoy.service.discovery.v3.AggregatedDiscoveryService, state-of-the-world
// or incremental/delta), the subscriptions on it (wildcard Listener and
// Cluster; the RouteConfiguration and ClusterLoadAssignment names those
// reference), ACK/NACK bookkeeping, reconnection with backoff, and applying
// accepted resources to a state.Store. For a node proxy it also holds the
// Istio Workload API subscription (istio.workload.Address and
// istio.security.Authorization, delta only, workloads.go) and publishes
// them indexed as Snapshot.Ambient. Other packages add resource types the
// client does not decode (extra.go: ExtraType, Client.Watch), such as
// Istio's NameTable for the DNS proxy, so that one stream with one set of
// TLS and token settings carries everything; their watchers get the raw
// resources and their errors become NACKs.
//
// Resources are decoded by xds/resource; this package never interprets a
// resource's fields beyond asking resource.References what it depends on.
// It writes only the non-static entries of the store: listeners and clusters
// marked Static (the bootstrap's static_resources) are never replaced or
// removed, and the Routes and Endpoints maps are owned by the client.
//
// xds imports state and xds/resource; it must not import dataplane, lb,
// policy or anything else that reads the store.
package xds
