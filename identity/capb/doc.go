// Package capb holds the generated Go code for Istio's certificate API
// (istio.v1.auth.IstioCertificateService) from ca.proto, which is written
// here with Istio's package, names and field numbers. Regenerate with
// `go generate ./identity/capb` (needs protoc, protoc-gen-go and
// protoc-gen-go-grpc on PATH); the output is committed so builds need none.
//
// capb imports only protobuf and grpc.
package capb

//go:generate sh -c "cd ../.. && protoc -I. -I/usr/include --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative identity/capb/ca.proto"
