// Package zdspb holds the Go types of proto/zds/zds.proto, the in-pod
// workload protocol (package istio.workload.zds, wire-compatible with
// ztunnel's). Regenerate with `go generate ./inpod/zdspb` (needs protoc and
// protoc-gen-go on PATH); the output is committed so builds need neither.
//
// zdspb imports only the protobuf runtime.
package zdspb

//go:generate sh -c "cd ../.. && protoc -I. --go_out=. --go_opt=module=github.com/meshlet/meshlet proto/zds/zds.proto"
