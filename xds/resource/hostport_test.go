package resource

import (
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/meshlet/meshlet/state"
)

// TestDecodeHCMStripPortMode: strip_any_host_port (the strip_port_mode
// oneof) and strip_matching_host_port select which Host port the
// connection manager removes; unset keeps it; both set is rejected.
func TestDecodeHCMStripPortMode(t *testing.T) {
	for _, tc := range []struct {
		name            string
		anyPort, match  bool
		want            state.StripHostPort
		wantErrContains string
	}{
		{name: "unset", want: state.StripHostPortNone},
		{name: "any", anyPort: true, want: state.StripHostPortAny},
		{name: "matching", match: true, want: state.StripHostPortMatching},
		{name: "both", anyPort: true, match: true, wantErrContains: "strip_matching_host_port"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := rdsHCM(t, "r")
			if tc.anyPort {
				h.StripPortMode = &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true}
			}
			h.StripMatchingHostPort = tc.match
			got, err := decodeHCM(mustAny(t, h))
			if tc.wantErrContains != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrContains) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErrContains)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.StripHostPort != tc.want {
				t.Fatalf("StripHostPort = %d, want %d", got.StripHostPort, tc.want)
			}
		})
	}
}
