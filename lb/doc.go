// Package lb owns load balancing: turning a cluster's endpoints into a
// Picker and picking one host per request or connection.
//
// The split follows grpc-go: a Balancer receives endpoint updates (serialized
// by its caller) and builds a new immutable picker for each; Pick reads the
// current picker through an atomic pointer and never blocks. Hosts keep their
// identity (and their active-request counts) across updates by address.
//
// A picker has two layers, both following Envoy's documented behaviour:
//
//   - priority.go: per-priority health scaled by the overprovisioning
//     factor, spill-over to lower priorities, degraded hosts as a second
//     tier, panic mode (healthy_panic_threshold 50%) and total panic.
//     DRAINING hosts are excluded outright, as Envoy does.
//   - per level and health class, a policy picker: roundrobin.go (smooth
//     weighted schedule, lock-free), leastrequest.go (P2C, or EDF on
//     weight/(active+1)^bias), random.go (weighted), ringhash.go and
//     maglev.go (Envoy-compatible placement, checked against Envoy's own
//     test vectors), with locality.go choosing a locality first when
//     locality weighted LB is on.
//
// build.go ties them together. Pick allocates nothing.
//
// lb imports only state. It knows nothing of connections, pools or HTTP.
package lb
