package resource

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/meshlet/meshlet/xds/istiopb/securitypb"
)

// Fields of a newer Workload API in a Match (not in our copy of the
// proto) are recorded by number, so evaluation can fail closed instead of
// reading a narrower match as a wider one.
func TestDecodeAuthzMatchUnknownFields(t *testing.T) {
	known, err := proto.Marshal(&securitypb.Match{Namespaces: []*securitypb.StringMatch{
		{MatchType: &securitypb.StringMatch_Exact{Exact: "ns1"}}}})
	if err != nil {
		t.Fatal(err)
	}
	// Two entries of field 11 and one of field 12, length-delimited
	// (message-shaped), as a newer istiod would send.
	sa := protowire.AppendTag(nil, 1, protowire.BytesType)
	sa = protowire.AppendString(sa, "default")
	raw := known
	for _, num := range []protowire.Number{11, 11, 12} {
		raw = protowire.AppendTag(raw, num, protowire.BytesType)
		raw = protowire.AppendBytes(raw, sa)
	}
	var m securitypb.Match
	if err := proto.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	got, err := decodeAuthzMatch(&m)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.UnknownFields, []int32{11, 12}) {
		t.Errorf("UnknownFields = %v, want [11 12]", got.UnknownFields)
	}
	if len(got.Namespaces) != 1 || got.Namespaces[0].Value != "ns1" {
		t.Errorf("known fields lost: %+v", got.Namespaces)
	}

	// Without unknown fields, none are recorded.
	m.Reset()
	if err := proto.Unmarshal(known, &m); err != nil {
		t.Fatal(err)
	}
	if got, _ := decodeAuthzMatch(&m); got.UnknownFields != nil {
		t.Errorf("UnknownFields = %v for a match without any", got.UnknownFields)
	}
}
