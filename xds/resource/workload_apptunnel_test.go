package resource

import (
	"strings"
	"testing"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds/istiopb/workloadpb"
)

// application_tunnel decides what bytes a workload receives first, so an
// unknown protocol or an out-of-range port rejects the workload with the
// field path; every case goes through Decode on the wire bytes.
func TestDecodeWorkloadAppTunnel(t *testing.T) {
	const prefix = `workload "Kubernetes//Pod/default/web-1": application_tunnel.`
	cases := []struct {
		name    string
		in      *workloadpb.ApplicationTunnel
		want    *state.AppTunnel
		wantErr string
	}{
		{name: "absent is plain delivery", in: nil, want: nil},
		{name: "PROXY with port",
			in:   &workloadpb.ApplicationTunnel{Protocol: workloadpb.ApplicationTunnel_PROXY, Port: 15088},
			want: &state.AppTunnel{Protocol: state.AppTunnelPROXY, Port: 15088}},
		{name: "PROXY without port keeps the original port",
			in:   &workloadpb.ApplicationTunnel{Protocol: workloadpb.ApplicationTunnel_PROXY},
			want: &state.AppTunnel{Protocol: state.AppTunnelPROXY}},
		{name: "NONE with port only moves the port",
			in:   &workloadpb.ApplicationTunnel{Port: 9000},
			want: &state.AppTunnel{Protocol: state.AppTunnelNone, Port: 9000}},
		{name: "unknown protocol rejected",
			in:      &workloadpb.ApplicationTunnel{Protocol: 4, Port: 15088},
			wantErr: prefix + "protocol: unknown value 4"},
		{name: "port out of range rejected",
			in:      &workloadpb.ApplicationTunnel{Protocol: workloadpb.ApplicationTunnel_PROXY, Port: 70000},
			wantErr: prefix + "port: 70000 is not a port"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			w := testWorkload()
			w.ApplicationTunnel = c.in
			in := &workloadpb.Address{Type: &workloadpb.Address_Workload{Workload: w}}
			_, v, err := Decode(state.TypeAddress, anyOf(t, in, state.TypeAddress))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, c.wantErr)
				}
				if v != nil {
					t.Errorf("value returned with an error: %v", v)
				}
				return
			}
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			got := v.(*state.Workload).AppTunnel
			if (got == nil) != (c.want == nil) || (got != nil && *got != *c.want) {
				t.Fatalf("AppTunnel = %+v, want %+v", got, c.want)
			}
		})
	}
}
