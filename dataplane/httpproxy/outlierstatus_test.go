package httpproxy

import (
	"net/http"
	"testing"
)

func TestOutlierStatus(t *testing.T) {
	for _, tc := range []struct {
		status int
		grpc   string
		want   int
	}{
		{200, "", 200},
		{503, "", 503},
		{200, "0", 200},
		{200, "14", 503},
		{200, "4", 504},
		{200, "13", 500},
		{200, "8", 429},
		{200, "junk", 200},
		{502, "14", 502}, // an HTTP error status stands as is
	} {
		h := http.Header{}
		if tc.grpc != "" {
			h.Set("grpc-status", tc.grpc)
		}
		if got := outlierStatus(&http.Response{StatusCode: tc.status, Header: h}); got != tc.want {
			t.Errorf("status %d grpc-status %q: got %d, want %d", tc.status, tc.grpc, got, tc.want)
		}
	}
}
