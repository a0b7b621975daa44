package ebpf

import (
	"net/netip"
	"testing"
)

// TestLoadSpec parses the committed object: every hook the capture needs is
// there with the attach type its section name gives.
func TestLoadSpec(t *testing.T) {
	s, err := LoadSpec()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"connect4":     "CGroupInet4Connect",
		"connect6":     "CGroupInet6Connect",
		"sock_ops":     "CGroupSockOps",
		"get_sockopt":  "CGroupGetsockopt",
		"getpeername4": "CgroupInet4GetPeername",
		"getpeername6": "CgroupInet6GetPeername",
		"fastpath_msg": "SkMsgVerdict",
	}
	got := s.Programs()
	for name, at := range want {
		if got[name] != at {
			t.Errorf("program %s: attach type %q, want %q", name, got[name], at)
		}
	}
	if len(got) != len(want) {
		t.Errorf("programs %v, want %d", got, len(want))
	}
}

func TestConfigFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want uint16
	}{
		{"plain", Config{OutboundPort: 15001}, 0},
		{"mark", Config{OutboundPort: 15001, ProxyMark: 0x539}, flagMark},
		{"include v4", Config{OutboundPort: 15001, IncludeCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}, flagInclude4},
		{"include v6 and no v6", Config{OutboundPort: 15001, DisableIPv6: true,
			IncludeCIDRs: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}}, flagInclude6 | flagNoIPv6},
		{"fast path", Config{OutboundPort: 15001, FastPath: true}, flagFastPath},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.cfg.config()
			if c.Flags != tc.want || c.OutboundPort != 15001 {
				t.Errorf("flags %#x port %d, want %#x 15001", c.Flags, c.OutboundPort, tc.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"ok", Config{OutboundPort: 15001}, true},
		{"no port", Config{}, false},
		{"bad CIDR", Config{OutboundPort: 1, ExcludeCIDRs: []netip.Prefix{{}}}, false},
		{"too many ports", Config{OutboundPort: 1, ExcludePorts: make([]uint16, 257)}, false},
	} {
		if err := tc.cfg.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate() = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// TestOrigAddr checks the decoding of what the programs store: addresses
// in network order as read from the context, ports in network order.
func TestOrigAddr(t *testing.T) {
	for _, want := range []netip.AddrPort{
		netip.MustParseAddrPort("10.99.0.1:80"),
		netip.MustParseAddrPort("[fd00::1]:8443"),
	} {
		var o captureOrig
		o.Port = netPort(want.Port())
		if want.Addr().Is4() {
			o.Family = afInet
			a := want.Addr().As4()
			o.Addr[0] = nativeU32(a[:])
		} else {
			o.Family = afInet6
			k := lpm6Key(netip.PrefixFrom(want.Addr(), 128))
			o.Addr = k.Addr
		}
		if got := origAddr(o); got != want {
			t.Errorf("origAddr = %v, want %v", got, want)
		}
	}
	// 10.99.0.1 in memory order is 0a 63 00 01: little-endian 0x0100630a.
	if k := lpm4Key(netip.MustParsePrefix("10.99.0.1/32")); k.Addr != 0x0100630a || k.Prefixlen != 32 {
		t.Errorf("lpm4Key = %#x/%d", k.Addr, k.Prefixlen)
	}
}
