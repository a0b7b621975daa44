// Package lb owns load balancing: turning a cluster's endpoints into a
// Picker and picking one host per request or connection.
//
// The split follows grpc-go: a Balancer receives endpoint updates (serialized
// by its caller) and builds a new immutable picker for each; Pick reads the
// current picker through an atomic pointer and never blocks. Hosts keep their
// identity (and their active-request counts) across updates by address.
//
// lb imports only state. It knows nothing of connections, pools or HTTP.
package lb
