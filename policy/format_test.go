package policy

import (
	"net/netip"
	"testing"
)

func TestFormatValue(t *testing.T) {
	fc := &FormatContext{
		DownstreamRemote: netip.MustParseAddrPort("10.0.0.1:5555"),
		DownstreamLocal:  netip.MustParseAddrPort("[2001:db8::2]:8080"),
		UpstreamRemote:   "10.9.9.9:80",
		Protocol:         "HTTP/1.1",
		Hostname:         "node-1",
	}
	tests := []struct {
		in, want string
		fc       *FormatContext
	}{
		{"plain", "plain", fc},
		{"", "", fc},
		{"%DOWNSTREAM_REMOTE_ADDRESS%", "10.0.0.1:5555", fc},
		{"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "10.0.0.1", fc},
		{"%DOWNSTREAM_LOCAL_ADDRESS%", "[2001:db8::2]:8080", fc},
		{"%UPSTREAM_REMOTE_ADDRESS%", "10.9.9.9:80", fc},
		{"%PROTOCOL%", "HTTP/1.1", fc},
		{"%HOSTNAME%", "node-1", fc},
		{"ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%;p=%PROTOCOL%", "ip=10.0.0.1;p=HTTP/1.1", fc},
		{"100%%", "100%", fc},
		{"%%PROTOCOL%%", "%PROTOCOL%", fc},
		{"%UNKNOWN%", "%UNKNOWN%", fc},
		{"%REQ(x-foo)%", "%REQ(x-foo)%", fc},
		{"%UNKNOWN%PROTOCOL%", "%UNKNOWNHTTP/1.1", fc},
		{"50% off", "50% off", fc},
		{"trailing %", "trailing %", fc},
		{"%PROTOCOL", "%PROTOCOL", fc},
		{"%", "%", fc},
		{"%%", "%", fc},
		{"%DOWNSTREAM_REMOTE_ADDRESS%", "", &FormatContext{}},
		{"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", "", &FormatContext{}},
		{"a%HOSTNAME%b", "ab", nil},
	}
	for _, tt := range tests {
		if got := FormatValue(tt.in, tt.fc); got != tt.want {
			t.Errorf("FormatValue(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFormatValueNoPercentNoAlloc(t *testing.T) {
	fc := &FormatContext{Protocol: "HTTP/2"}
	allocs := testing.AllocsPerRun(100, func() {
		if FormatValue("application/json; charset=utf-8", fc) == "" {
			t.Fatal("empty")
		}
	})
	if allocs != 0 {
		t.Errorf("FormatValue without '%%' allocates %.1f per call, want 0", allocs)
	}
}
