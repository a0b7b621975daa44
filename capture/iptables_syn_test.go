package capture

import (
	"net/netip"
	"strings"
	"testing"
)

// Every TCP redirection starts on a SYN only, so that a connection
// conntrack picks up mid-stream (one that predates the rules) is never
// NATed or TPROXY-diverted to a listener with no socket for it (a reset).
func TestIPTablesPlanSYNOnly(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		v6   bool
	}{
		{"defaults", Config{}, false},
		{"defaults v6", Config{}, true},
		{"include lists", Config{
			OutboundIncludeCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
			InboundIncludePorts:  []uint16{8080, 9090},
		}, false},
		{"tproxy", Config{Inbound: InboundTProxy}, false},
		{"tproxy include ports", Config{Inbound: InboundTProxy, InboundIncludePorts: []uint16{80}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lines := flat(iptablesPlan(tc.cfg.withDefaults(), tc.v6))
			diverting := 0
			for _, l := range lines {
				if !strings.Contains(l, "-j REDIRECT") && !strings.Contains(l, "-j TPROXY") {
					continue
				}
				if strings.Contains(l, "-p udp") {
					continue // DNS over UDP has no handshake
				}
				diverting++
				if !strings.Contains(l, "-p tcp --syn") {
					t.Errorf("redirects more than SYNs: %q", l)
				}
			}
			if diverting == 0 {
				t.Fatalf("no TCP redirection in\n%s", strings.Join(lines, "\n"))
			}
		})
	}
}
