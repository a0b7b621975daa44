package ebpf

import (
	"fmt"
	"slices"

	cebpf "github.com/cilium/ebpf"
)

// ProxyPorts are the proxy's own ports (admin, outbound, inbound, HBONE,
// health, readiness, DNS, Prometheus). Inbound capture never steers them:
// a connection to one of them is meant for the proxy's listener there.
var ProxyPorts = []uint16{15000, 15001, 15006, 15008, 15020, 15021, 15053, 15090}

// InboundConfig is what the inbound (sk_lookup) program is told: which
// destination ports of connections arriving from the network it hands to
// the proxy's inbound listener.
type InboundConfig struct {
	// ExcludePorts pass to whatever listens on them (Istio's
	// excludeInboundPorts), in addition to ProxyPorts.
	ExcludePorts []uint16
	// IncludePorts, when not empty, are the only ports steered (Istio's
	// includeInboundPorts; empty means "*").
	IncludePorts []uint16
	// DisableIPv6 leaves IPv6 connections alone.
	DisableIPv6 bool
}

// Flags shared with bpf/inbound.c (struct inbound_config.flags).
const (
	inbFlagInclude = 1 << iota
	inbFlagNoIPv6
)

// maxInboundPorts is the size of the port maps in bpf/inbound.c.
const maxInboundPorts = 256

// Validate reports a config the program cannot express.
func (c InboundConfig) Validate() error {
	if n := len(c.excluded()); n > maxInboundPorts {
		return fmt.Errorf("ebpf: inbound: %d excluded ports with the proxy's own, at most %d", n, maxInboundPorts)
	}
	if n := len(c.included()); n > maxInboundPorts {
		return fmt.Errorf("ebpf: inbound: %d included ports, at most %d", n, maxInboundPorts)
	}
	for _, p := range slices.Concat(c.ExcludePorts, c.IncludePorts) {
		if p == 0 {
			return fmt.Errorf("ebpf: inbound: port 0")
		}
	}
	if len(c.IncludePorts) > 0 && len(c.included()) == 0 {
		// Every included port is also excluded: nothing would be
		// steered, yet an include set means "only these".
		return fmt.Errorf("ebpf: inbound: every include port %v is excluded", c.IncludePorts)
	}
	return nil
}

// excluded is the exclude map's content: the proxy's ports and
// ExcludePorts, sorted, without duplicates.
func (c InboundConfig) excluded() []uint16 {
	out := slices.Concat(ProxyPorts, c.ExcludePorts)
	slices.Sort(out)
	return slices.Compact(out)
}

// included is the include map's content: IncludePorts not excluded (the
// program checks the exclude map first, so they would never be steered).
func (c InboundConfig) included() []uint16 {
	ex := c.excluded()
	var out []uint16
	for _, p := range c.IncludePorts {
		if _, found := slices.BinarySearch(ex, p); !found {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// config is the value of inbound_config_map for c.
func (c InboundConfig) config() inboundInboundConfig {
	var cfg inboundInboundConfig
	if len(c.IncludePorts) > 0 {
		cfg.Flags |= inbFlagInclude
	}
	if c.DisableIPv6 {
		cfg.Flags |= inbFlagNoIPv6
	}
	return cfg
}

// InboundSpec is the parsed inbound object; it touches no kernel state.
type InboundSpec struct {
	cs *cebpf.CollectionSpec
}

// LoadInboundSpec parses the embedded inbound BPF object.
func LoadInboundSpec() (*InboundSpec, error) {
	cs, err := loadInbound()
	if err != nil {
		return nil, fmt.Errorf("ebpf: parse inbound object: %w", err)
	}
	return &InboundSpec{cs: cs}, nil
}

// Programs lists the programs of the object with the hook each attaches
// to ("inbound_lookup": "SkLookup").
func (s *InboundSpec) Programs() map[string]string {
	out := make(map[string]string, len(s.cs.Programs))
	for name, p := range s.cs.Programs {
		out[name] = p.AttachType.String()
	}
	return out
}
