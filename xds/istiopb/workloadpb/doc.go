// Package workloadpb is the Go code generated (protoc + protoc-gen-go, by
// scripts/protogen.sh) from proto/istio/workload.proto: Istio's Workload
// API (istio.workload.Address: a Workload or a Service) with Istio's
// package, names and field numbers, plus meshlet's documented extension
// fields (numbers 1000 and up). Only xds/resource decodes it; nothing below
// xds imports it.
package workloadpb
