package dns

import (
	"slices"
	"testing"
)

func TestParseResolvConf(t *testing.T) {
	rc := ParseResolvConf([]byte(`# generated
nameserver 10.96.0.10
nameserver fd00::10 ; comment
nameserver not-an-ip
nameserver 127.0.0.1:5353
nameserver [::1]:5354
domain old.example
search default.svc.cluster.local svc.cluster.local cluster.local
options ndots:5
`))
	if want := []string{"10.96.0.10:53", "[fd00::10]:53", "127.0.0.1:5353", "[::1]:5354"}; !slices.Equal(rc.Servers, want) {
		t.Errorf("servers %v, want %v", rc.Servers, want)
	}
	if want := []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}; !slices.Equal(rc.Search, want) {
		t.Errorf("search %v, want %v", rc.Search, want)
	}
	if _, err := ReadResolvConf("/nonexistent/resolv.conf"); err == nil {
		t.Error("missing file: no error")
	}
}
