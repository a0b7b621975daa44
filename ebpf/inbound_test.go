package ebpf

import (
	"slices"
	"strings"
	"testing"
)

// TestInboundPortMaps: the exclude map always holds the proxy's own ports
// plus the configured ones, once each; the include map holds the include
// set minus excluded ports, and its flag is set only when an include set
// is given ("*" otherwise).
func TestInboundPortMaps(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      InboundConfig
		excluded []uint16
		included []uint16
		flags    uint32
		err      string
	}{
		{name: "defaults", excluded: ProxyPorts},
		{name: "exclude set", cfg: InboundConfig{ExcludePorts: []uint16{22, 15021, 22}},
			excluded: []uint16{22, 15000, 15001, 15006, 15008, 15020, 15021, 15053, 15090}},
		{name: "include set", cfg: InboundConfig{IncludePorts: []uint16{9090, 8080, 15006, 8080}},
			excluded: ProxyPorts, included: []uint16{8080, 9090}, flags: inbFlagInclude},
		{name: "no ipv6", cfg: InboundConfig{DisableIPv6: true}, excluded: ProxyPorts, flags: inbFlagNoIPv6},
		{name: "port 0", cfg: InboundConfig{ExcludePorts: []uint16{0}}, err: "port 0"},
		{name: "include only excluded", cfg: InboundConfig{IncludePorts: []uint16{15090}}, err: "excluded"},
		{name: "too many", cfg: InboundConfig{ExcludePorts: seq(1, 300)}, err: "at most 256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("Validate = %v, want an error mentioning %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := tc.cfg.excluded(); !slices.Equal(got, tc.excluded) {
				t.Errorf("excluded %v, want %v", got, tc.excluded)
			}
			if got := tc.cfg.included(); !slices.Equal(got, tc.included) {
				t.Errorf("included %v, want %v", got, tc.included)
			}
			if got := tc.cfg.config().Flags; got != tc.flags {
				t.Errorf("flags %#x, want %#x", got, tc.flags)
			}
		})
	}
}

func seq(from, n uint16) []uint16 {
	var out []uint16
	for i := range n {
		out = append(out, from+i)
	}
	return out
}

// TestInboundSpec: the embedded object has one program, for sk_lookup,
// and the maps the loader fills.
func TestInboundSpec(t *testing.T) {
	s, err := LoadInboundSpec()
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Programs(); len(got) != 1 || got["inbound_lookup"] != "SkLookup" {
		t.Errorf("programs %v, want inbound_lookup: SkLookup", got)
	}
	for _, m := range []string{"inbound_config_map", "inbound_exclude", "inbound_include", "inbound_listener", "inbound_stats"} {
		if s.cs.Maps[m] == nil {
			t.Errorf("map %s missing", m)
		}
	}
}
