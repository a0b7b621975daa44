// Package ndspb holds the Go types generated from nds.proto: Istio's NDS
// NameTable, wire compatible with istiod's. Only generated code lives here;
// it imports nothing of meshlet.
package ndspb

//go:generate sh -c "cd ../.. && protoc -I . --go_out=. --go_opt=paths=source_relative dns/ndspb/nds.proto"
