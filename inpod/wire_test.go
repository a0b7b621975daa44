package inpod

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/meshlet/meshlet/inpod/zdspb"
)

// TestWireFormat pins the encoding to ztunnel's field numbers: these bytes
// are what istio-cni and ztunnel put on the socket.
func TestWireFormat(t *testing.T) {
	for _, tc := range []struct {
		name string
		msg  proto.Message
		want []byte
	}{
		{"hello V1", &zdspb.ZdsHello{Version: zdspb.Version_V1}, []byte{0x08, 0x01}},
		{"add", &zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_Add{Add: &zdspb.AddWorkload{
			Uid: "u", WorkloadInfo: &zdspb.WorkloadInfo{Name: "n", Namespace: "ns", ServiceAccount: "sa"}}}},
			[]byte{0x0a, 0x10, // add = 1
				0x0a, 0x01, 'u', // uid = 1
				0x12, 0x0b, // workload_info = 2
				0x0a, 0x01, 'n', 0x12, 0x02, 'n', 's', 0x1a, 0x02, 's', 'a'}}, // name 1, namespace 2, service_account 3
		{"keep", &zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_Keep{Keep: &zdspb.KeepWorkload{Uid: "u"}}},
			[]byte{0x2a, 0x03, 0x0a, 0x01, 'u'}}, // keep = 5, uid = 1
		{"del", &zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_Del{Del: &zdspb.DelWorkload{Uid: "u"}}},
			[]byte{0x12, 0x03, 0x12, 0x01, 'u'}}, // del = 2, uid = 2
		{"snapshot sent", &zdspb.WorkloadRequest{Payload: &zdspb.WorkloadRequest_SnapshotSent{SnapshotSent: &zdspb.SnapshotSent{}}},
			[]byte{0x1a, 0x00}}, // snapshot_sent = 3
		{"ack with error", &zdspb.WorkloadResponse{Payload: &zdspb.WorkloadResponse_Ack{Ack: &zdspb.Ack{Error: "e"}}},
			[]byte{0x0a, 0x03, 0x0a, 0x01, 'e'}}, // ack = 1, error = 1
	} {
		got, err := proto.Marshal(tc.msg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("%s: % x, want % x", tc.name, got, tc.want)
		}
	}
}
