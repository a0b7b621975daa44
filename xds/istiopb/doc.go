// Package istiopb holds the generated Go code for meshlet's copies of the
// Istio Workload API protos (proto/istio): workloadpb (istio.workload:
// Address, Workload, Service) and securitypb (istio.security:
// Authorization). The full names and field numbers are Istio's, so istiod
// and ztunnel-speaking control planes interoperate; a test pins them.
//
// Regenerate with scripts/protogen.sh. Only xds and xds/resource (and
// tests that play a control plane) import these packages; nothing below
// xds sees a proto.
package istiopb
