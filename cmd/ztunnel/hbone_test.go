package main

import (
	"net/netip"
	"testing"
)

func TestHBONEAllowList(t *testing.T) {
	tests := []struct {
		list   string
		target string
		want   bool
	}{
		{"", "127.0.0.1:8080", true},
		{"", "[::1]:80", true},
		{"", "10.0.0.5:80", false},
		{"10.0.0.0/24", "10.0.0.5:80", true},
		{"10.0.0.0/24", "10.0.1.5:80", false},
		{"10.0.0.5", "10.0.0.5:9999", true},
		{"10.0.0.5:80, 10.0.0.6:81", "10.0.0.5:80", true},
		{"10.0.0.5:80", "10.0.0.5:81", false},
		{"10.0.0.5:80", "127.0.0.1:80", false},
	}
	for _, tt := range tests {
		a, err := parseAllowList(tt.list)
		if err != nil {
			t.Fatalf("%q: %v", tt.list, err)
		}
		if got := a.allows(netip.MustParseAddrPort(tt.target)); got != tt.want {
			t.Errorf("allow %q, target %s = %v, want %v", tt.list, tt.target, got, tt.want)
		}
	}
	for _, bad := range []string{"example.com", "10.0.0.0/33", "10.0.0.5:"} {
		if _, err := parseAllowList(bad); err == nil {
			t.Errorf("parseAllowList(%q) accepted", bad)
		}
	}
}

func TestHBONEFlagsNeedIdentity(t *testing.T) {
	o := &hboneOptions{Inbound: "127.0.0.1:0"}
	if !o.enabled() {
		t.Fatal("--hbone-inbound alone should enable HBONE")
	}
	if _, err := startHBONE(o, nil, nil, nil); err == nil {
		t.Fatal("started without certificate files")
	}
	if (*hboneOptions)(nil).enabled() {
		t.Fatal("nil options enabled")
	}
}
