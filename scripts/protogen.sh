#!/usr/bin/env bash
# Regenerates the Go code for meshlet's copies of the Istio Workload API
# protos (proto/istio/*.proto -> xds/istiopb/{workloadpb,securitypb}).
# Needs protoc (apt protobuf-compiler) and protoc-gen-go at the version in
# go.mod (go install google.golang.org/protobuf/cmd/protoc-gen-go).
set -euo pipefail
cd "$(dirname "$0")/.."
protoc -I proto -I /usr/include \
	--go_out=. --go_opt=module=github.com/meshlet/meshlet \
	proto/istio/workload.proto proto/istio/authorization.proto
echo "protogen: regenerated xds/istiopb" >&2
