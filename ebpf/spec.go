package ebpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	cebpf "github.com/cilium/ebpf"
)

// ErrNotSupported: the kernel (or the system: no cgroup v2, no bpffs) lacks
// what eBPF capture needs. Every such error wraps it.
var ErrNotSupported = errors.New("ebpf capture not supported")

// Config is what the programs are told; New fills the maps from it.
type Config struct {
	// OutboundPort is the proxy's outbound listener on 127.0.0.1 and
	// [::1]; captured connects go there.
	OutboundPort uint16
	// The proxy's own sockets are never captured: those of this uid or
	// gid, or marked with ProxyMark (SO_MARK) when it is not zero.
	ProxyUID, ProxyGID uint32
	ProxyMark          uint32
	// Destinations left alone. When IncludeCIDRs has prefixes of a family,
	// only those destinations of that family are captured.
	ExcludePorts []uint16
	ExcludeCIDRs []netip.Prefix
	IncludeCIDRs []netip.Prefix
	DisableIPv6  bool
	// FastPath puts same-node TCP sockets of the cgroup in a sockhash and
	// redirects their sends into the peer socket (sk_msg).
	FastPath bool
}

// Flags shared with bpf/capture.c (struct config.flags).
const (
	flagInclude4 = 1 << iota
	flagInclude6
	flagNoIPv6
	flagFastPath
	flagMark
)

// Validate reports a config the programs cannot express.
func (c Config) Validate() error {
	if c.OutboundPort == 0 {
		return errors.New("ebpf: outbound port is 0")
	}
	if len(c.ExcludePorts) > 256 {
		return fmt.Errorf("ebpf: %d exclude ports, at most 256", len(c.ExcludePorts))
	}
	for _, p := range append(append([]netip.Prefix(nil), c.ExcludeCIDRs...), c.IncludeCIDRs...) {
		if !p.IsValid() {
			return fmt.Errorf("ebpf: invalid CIDR %v", p)
		}
	}
	return nil
}

// config is the value of config_map for c.
func (c Config) config() captureConfig {
	cfg := captureConfig{
		ProxyUid:     c.ProxyUID,
		ProxyGid:     c.ProxyGID,
		ProxyMark:    c.ProxyMark,
		OutboundPort: c.OutboundPort,
	}
	for _, p := range c.IncludeCIDRs {
		if p.Addr().Unmap().Is4() {
			cfg.Flags |= flagInclude4
		} else {
			cfg.Flags |= flagInclude6
		}
	}
	if c.DisableIPv6 {
		cfg.Flags |= flagNoIPv6
	}
	if c.FastPath {
		cfg.Flags |= flagFastPath
	}
	if c.ProxyMark != 0 {
		cfg.Flags |= flagMark
	}
	return cfg
}

// Spec is the parsed capture object; it touches no kernel state.
type Spec struct {
	cs *cebpf.CollectionSpec
}

// LoadSpec parses the embedded BPF object.
func LoadSpec() (*Spec, error) {
	cs, err := loadCapture()
	if err != nil {
		return nil, fmt.Errorf("ebpf: parse capture object: %w", err)
	}
	return &Spec{cs: cs}, nil
}

// Programs lists the programs of the object, by name, with the hook each
// attaches to (e.g. "connect4": "CGroupInet4Connect").
func (s *Spec) Programs() map[string]string {
	out := make(map[string]string, len(s.cs.Programs))
	for name, p := range s.cs.Programs {
		out[name] = p.AttachType.String()
	}
	return out
}

// lpm4Key and lpm6Key are LPM trie keys for p, the address in network
// order as the programs read it from the context.
func lpm4Key(p netip.Prefix) captureLpm4 {
	a := p.Masked().Addr().Unmap().As4()
	return captureLpm4{Prefixlen: uint32(p.Bits()), Addr: nativeU32(a[:])}
}

func lpm6Key(p netip.Prefix) captureLpm6 {
	a := p.Masked().Addr().As16()
	k := captureLpm6{Prefixlen: uint32(p.Bits())}
	for i := range 4 {
		k.Addr[i] = nativeU32(a[i*4 : i*4+4])
	}
	return k
}

// nativeU32 reads 4 bytes in memory order: addresses stay in network order
// in the maps, as the programs read them from the context.
func nativeU32(b []byte) uint32 { return binary.NativeEndian.Uint32(b) }

func nativeBytes(v uint32) [4]byte {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], v)
	return b
}

// netPort and hostPort convert a port between host order and the
// network-order uint16 the programs store.
func netPort(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

func hostPort(p uint16) uint16 {
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], p)
	return binary.BigEndian.Uint16(b[:])
}

// origAddr decodes a stored original destination.
func origAddr(o captureOrig) netip.AddrPort {
	port := hostPort(o.Port)
	if o.Family == afInet {
		return netip.AddrPortFrom(netip.AddrFrom4(nativeBytes(o.Addr[0])), port)
	}
	var a [16]byte
	for i := range 4 {
		b := nativeBytes(o.Addr[i])
		copy(a[i*4:], b[:])
	}
	return netip.AddrPortFrom(netip.AddrFrom16(a), port)
}

const (
	afInet  = 2
	afInet6 = 10
)
