// Package securitypb is the Go code generated (protoc + protoc-gen-go, by
// scripts/protogen.sh) from proto/istio/authorization.proto: Istio's
// istio.security.Authorization with Istio's package, names and field
// numbers, plus meshlet's documented L7 extension fields (numbers 1000 and
// up). Only xds/resource decodes it; nothing below xds imports it.
package securitypb
