package resource

import (
	"strings"
	"testing"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

// TestDecodeHCMForwardClientCert: forward_client_cert_details and
// set_current_client_cert_details decode into the connection manager's
// XFCC settings; an enum value outside the proto's is rejected with its
// field path.
func TestDecodeHCMForwardClientCert(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mode    hcmv3.HttpConnectionManager_ForwardClientCertDetails
		details *hcmv3.HttpConnectionManager_SetCurrentClientCertDetails
		want    state.ForwardClientCert
		wantDet state.ClientCertDetails
		wantErr string
	}{
		{name: "default sanitize", want: state.ForwardClientCertSanitize},
		{name: "forward only", mode: hcmv3.HttpConnectionManager_FORWARD_ONLY, want: state.ForwardClientCertForwardOnly},
		{
			name: "istio sidecar", mode: hcmv3.HttpConnectionManager_APPEND_FORWARD,
			details: &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Subject: wrapperspb.Bool(true), Dns: true, Uri: true},
			want:    state.ForwardClientCertAppendForward,
			wantDet: state.ClientCertDetails{Subject: true, DNS: true, URI: true},
		},
		{
			name: "gateway", mode: hcmv3.HttpConnectionManager_SANITIZE_SET,
			details: &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Cert: true, Chain: true, Subject: wrapperspb.Bool(false)},
			want:    state.ForwardClientCertSanitizeSet,
			wantDet: state.ClientCertDetails{Cert: true, Chain: true},
		},
		{name: "always forward only", mode: hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY, want: state.ForwardClientCertAlwaysForwardOnly},
		{name: "unknown", mode: 42, wantErr: "forward_client_cert_details"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := rdsHCM(t, "r")
			h.ForwardClientCertDetails = tc.mode
			h.SetCurrentClientCertDetails = tc.details
			got, err := decodeHCM(mustAny(t, h))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ForwardClientCert != tc.want {
				t.Errorf("ForwardClientCert = %v, want %v", got.ForwardClientCert, tc.want)
			}
			if got.ClientCertDetails != tc.wantDet {
				t.Errorf("ClientCertDetails = %+v, want %+v", got.ClientCertDetails, tc.wantDet)
			}
		})
	}
}
