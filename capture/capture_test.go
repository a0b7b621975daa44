package capture

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// flat renders a plan as iptables argument lines for comparison.
func flat(p ipPlan) []string {
	var out []string
	for _, c := range p.chains {
		out = append(out, "-t "+c.table+" -N "+c.chain)
	}
	for _, set := range [][]ipRule{p.rules, p.jumps} {
		for _, r := range set {
			out = append(out, "-t "+r.table+" -A "+r.chain+" "+strings.Join(r.args, " "))
		}
	}
	return out
}

func TestIPTablesPlan(t *testing.T) {
	base := Config{}.withDefaults()
	tests := []struct {
		name      string
		cfg       func(c *Config)
		v6        bool
		want      []string // lines that must be present
		forbidden []string // substrings that must not appear
	}{
		{
			name: "defaults v4",
			cfg:  func(*Config) {},
			want: []string{
				"-t nat -A MESHLET_OUTPUT -m owner --uid-owner 1337 -j RETURN",
				"-t nat -A MESHLET_OUTPUT -m owner --gid-owner 1337 -j RETURN",
				"-t nat -A MESHLET_OUTPUT -m mark --mark 0x539 -j RETURN",
				"-t nat -A MESHLET_OUTPUT -p udp --dport 53 -j REDIRECT --to-ports 15053",
				"-t nat -A MESHLET_OUTPUT -d 127.0.0.0/8 -j RETURN",
				"-t nat -A MESHLET_OUTPUT -p tcp --syn -j REDIRECT --to-ports 15001",
				"-t nat -A OUTPUT -j MESHLET_OUTPUT",
				"-t nat -A MESHLET_INBOUND -p tcp --syn -j REDIRECT --to-ports 15006",
				"-t nat -A PREROUTING -j MESHLET_INBOUND",
			},
			forbidden: []string{"TPROXY", "mangle"},
		},
		{
			name: "v6 loopback and family filtering of CIDRs",
			cfg: func(c *Config) {
				c.OutboundExcludeCIDRs = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("fd00:1::/64")}
			},
			v6: true,
			want: []string{
				"-t nat -A MESHLET_OUTPUT -d ::1/128 -j RETURN",
				"-t nat -A MESHLET_OUTPUT -d fd00:1::/64 -j RETURN",
			},
			forbidden: []string{"10.1.0.0/16", "127.0.0.0/8"},
		},
		{
			name: "include CIDRs and exclude ports",
			cfg: func(c *Config) {
				c.OutboundIncludeCIDRs = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
				c.OutboundExcludePorts = []uint16{22}
				c.InboundIncludePorts = []uint16{8080}
				c.InboundExcludePorts = []uint16{15008}
			},
			want: []string{
				"-t nat -A MESHLET_OUTPUT -p tcp --dport 22 -j RETURN",
				"-t nat -A MESHLET_OUTPUT -p tcp --syn -d 10.96.0.0/12 -j REDIRECT --to-ports 15001",
				"-t nat -A MESHLET_INBOUND -p tcp --dport 15008 -j RETURN",
				"-t nat -A MESHLET_INBOUND -p tcp --syn --dport 8080 -j REDIRECT --to-ports 15006",
			},
			forbidden: []string{"-p tcp --syn -j REDIRECT"},
		},
		{
			name: "tproxy inbound",
			cfg:  func(c *Config) { c.Inbound = InboundTProxy },
			want: []string{
				"-t mangle -N MESHLET_INBOUND",
				"-t mangle -A MESHLET_INBOUND -p tcp -m socket --transparent -j MARK --set-mark 0x53a",
				"-t mangle -A MESHLET_INBOUND -p tcp --syn -j TPROXY --on-port 15006 --tproxy-mark 0x53a/0xffffffff",
				"-t mangle -A PREROUTING -j MESHLET_INBOUND",
			},
			forbidden: []string{"-t nat -A PREROUTING"},
		},
		{
			name:      "dns and outbound off, inbound off",
			cfg:       func(c *Config) { c.DisableDNS, c.DisableOutbound, c.Inbound = true, true, InboundNone },
			forbidden: []string{"MESHLET"},
		},
		{
			name:      "dns only",
			cfg:       func(c *Config) { c.DisableOutbound, c.Inbound = true, InboundNone },
			want:      []string{"-t nat -A MESHLET_OUTPUT -p tcp --syn --dport 53 -j REDIRECT --to-ports 15053"},
			forbidden: []string{"15001", "15006"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.cfg(&cfg)
			got := flat(iptablesPlan(cfg, tc.v6))
			for _, w := range tc.want {
				if !slices.Contains(got, w) {
					t.Errorf("missing %q in\n%s", w, strings.Join(got, "\n"))
				}
			}
			for _, f := range tc.forbidden {
				for _, g := range got {
					if strings.Contains(g, f) {
						t.Errorf("%q must not appear: %q", f, g)
					}
				}
			}
		})
	}
}

// The owner exclusions come before any redirect, so the proxy's own
// connections (including its DNS forwarding) never loop.
func TestIPTablesPlanOrder(t *testing.T) {
	got := flat(iptablesPlan(Config{}.withDefaults(), false))
	first := slices.IndexFunc(got, func(s string) bool { return strings.Contains(s, "REDIRECT") })
	for _, excl := range []string{"--uid-owner", "--gid-owner", "--mark 0x539"} {
		i := slices.IndexFunc(got, func(s string) bool { return strings.Contains(s, excl) })
		if i < 0 || i > first {
			t.Errorf("%s at %d, first redirect at %d", excl, i, first)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{}, true},
		{"tproxy mark clash", Config{Inbound: InboundTProxy, TProxyMark: 0x539}, false},
		{"bad mode", Config{Inbound: 7}, false},
		{"bad cidr", Config{OutboundExcludeCIDRs: []netip.Prefix{{}}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(BackendNone, tc.cfg)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
		})
	}
	if _, err := New("pf", Config{}); err == nil {
		t.Fatal("unknown backend accepted")
	}
}

func TestDefaultsAndUIDZero(t *testing.T) {
	c := Config{}.withDefaults()
	if c.OutboundPort != 15001 || c.InboundPort != 15006 || c.DNSPort != 15053 || c.ProxyUID != 1337 || c.ProxyMark != 0x539 {
		t.Fatalf("defaults = %+v", c)
	}
	c = Config{ProxyUIDSet: true}.withDefaults()
	if c.ProxyUID != 0 {
		t.Fatalf("uid 0 set explicitly became %d", c.ProxyUID)
	}
}
