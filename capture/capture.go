package capture

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// Redirector programs traffic redirection for one scope.
//
// Install replaces whatever an earlier Install (of this process or of a
// crashed one) left in the scope, so calling it twice yields the same
// rules. Remove deletes everything Install created and is safe to call when
// nothing is installed. OriginalDst reports where a captured connection was
// headed.
type Redirector interface {
	Install(ctx context.Context, s Scope) error
	Remove(ctx context.Context) error
	OriginalDst(c net.Conn) (netip.AddrPort, error)
	// Name is the backend, e.g. "iptables-nft" or "nftables".
	Name() string
}

// ErrNotRedirected: conntrack has no NAT rewrite for the connection (it was
// TPROXY-diverted or reached the listener directly).
var ErrNotRedirected = errors.New("capture: connection was not NAT-redirected")

// InboundMode says how inbound TCP reaches the inbound listener.
type InboundMode int

const (
	// InboundRedirect NATs inbound connections to the inbound port; the
	// original destination comes from SO_ORIGINAL_DST.
	InboundRedirect InboundMode = iota
	// InboundTProxy diverts them with TPROXY; the listener needs
	// IP_TRANSPARENT (ListenTransparent) and sees the original destination as
	// its local address.
	InboundTProxy
	// InboundNone leaves inbound traffic alone.
	InboundNone
)

// Defaults, as Istio uses them.
const (
	DefaultOutboundPort = 15001
	DefaultInboundPort  = 15006
	DefaultDNSPort      = 15053
	DefaultProxyUID     = 1337
	DefaultProxyGID     = 1337
	// DefaultProxyMark (0x539) marks the proxy's own packets (SO_MARK);
	// they are never redirected.
	DefaultProxyMark = 0x539
	// DefaultTProxyMark routes TPROXY-diverted packets through
	// DefaultTProxyTable to the local host. It differs from the proxy mark
	// so that the proxy's own marked traffic is not routed locally.
	DefaultTProxyMark  = 0x53a
	DefaultTProxyTable = 133
)

// Names of everything the backends create. Cleanup matches on the prefix.
const (
	namePrefix     = "MESHLET_"
	chainOutput    = "MESHLET_OUTPUT"
	chainInbound   = "MESHLET_INBOUND"
	nftTable       = "MESHLET_CAPTURE"
	nftChainOut    = "MESHLET_OUTPUT"
	nftChainIn     = "MESHLET_INBOUND"
	nftChainTProxy = "MESHLET_TPROXY"
)

// Config says what to capture. The zero value of a port means its default;
// use the Disable fields to turn a direction off.
type Config struct {
	OutboundPort uint16 // 15001
	InboundPort  uint16 // 15006
	DNSPort      uint16 // 15053

	DisableOutbound bool
	DisableDNS      bool
	Inbound         InboundMode
	DisableIPv6     bool

	// The proxy's own traffic: sockets owned by this uid or gid, or packets
	// carrying this mark, are never redirected. Zero values mean the
	// defaults (1337, 1337, 0x539); a uid of 0 is allowed through ProxyUIDSet.
	ProxyUID    uint32
	ProxyGID    uint32
	ProxyUIDSet bool // ProxyUID is meant literally, even when 0
	ProxyGIDSet bool
	ProxyMark   uint32

	// Outbound: destination ports and CIDRs never redirected; when
	// OutboundIncludeCIDRs is not empty only those destinations are.
	OutboundExcludePorts []uint16
	OutboundExcludeCIDRs []netip.Prefix
	OutboundIncludeCIDRs []netip.Prefix
	// Inbound: destination ports never redirected (the proxy's own
	// listeners such as 15008 and 15021 belong here); when
	// InboundIncludePorts is not empty only those ports are.
	InboundExcludePorts []uint16
	InboundIncludePorts []uint16

	TProxyMark  uint32 // 0x53a
	TProxyTable int    // 133

	// eBPF backend: the directory on a bpf filesystem under which each
	// scope's links and maps are pinned (default /sys/fs/bpf/meshlet), and
	// the optional sockhash fast path between same-node sockets.
	BPFPinDir    string
	EBPFFastPath bool
	// EBPFProxyCgroup is the cgroup v2 directory of the proxy, where
	// get_sockopt answers SO_ORIGINAL_DST for accepted connections; empty
	// means this process's own cgroup (tests name one they made, so
	// nothing is attached to a cgroup they do not own).
	EBPFProxyCgroup string
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.OutboundPort == 0 {
		c.OutboundPort = DefaultOutboundPort
	}
	if c.InboundPort == 0 {
		c.InboundPort = DefaultInboundPort
	}
	if c.DNSPort == 0 {
		c.DNSPort = DefaultDNSPort
	}
	if c.ProxyUID == 0 && !c.ProxyUIDSet {
		c.ProxyUID = DefaultProxyUID
	}
	if c.ProxyGID == 0 && !c.ProxyGIDSet {
		c.ProxyGID = DefaultProxyGID
	}
	if c.ProxyMark == 0 {
		c.ProxyMark = DefaultProxyMark
	}
	if c.TProxyMark == 0 {
		c.TProxyMark = DefaultTProxyMark
	}
	if c.TProxyTable == 0 {
		c.TProxyTable = DefaultTProxyTable
	}
	if c.BPFPinDir == "" {
		c.BPFPinDir = DefaultBPFPinDir
	}
	return c
}

func (c Config) validate() error {
	if c.Inbound < InboundRedirect || c.Inbound > InboundNone {
		return fmt.Errorf("capture: inbound mode %d unknown", c.Inbound)
	}
	if c.TProxyMark == c.ProxyMark && c.Inbound == InboundTProxy {
		return fmt.Errorf("capture: tproxy mark %#x equals the proxy mark", c.TProxyMark)
	}
	for _, p := range slices.Concat(c.OutboundExcludeCIDRs, c.OutboundIncludeCIDRs) {
		if !p.IsValid() {
			return fmt.Errorf("capture: invalid CIDR %v", p)
		}
	}
	return nil
}

// Backend names accepted by New.
const (
	BackendIPTables       = "iptables" // legacy or nft, whichever the system uses
	BackendIPTablesLegacy = "iptables-legacy"
	BackendIPTablesNFT    = "iptables-nft"
	BackendNFTables       = "nftables"
	BackendEBPF           = "ebpf" // cgroup BPF programs for outbound TCP, sk_lookup for inbound
	BackendNone           = "none"
)

// New returns the named backend configured by cfg. BackendNone returns a
// Redirector that installs nothing.
func New(backend string, cfg Config) (Redirector, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	switch backend {
	case BackendIPTables, BackendIPTablesLegacy, BackendIPTablesNFT:
		return newIPTables(backend, cfg)
	case BackendNFTables:
		return newNFTables(cfg)
	case BackendEBPF:
		return newEBPF(cfg)
	case BackendNone, "":
		return none{}, nil
	}
	return nil, fmt.Errorf("capture: backend %q: want iptables, iptables-legacy, iptables-nft, nftables, ebpf or none", backend)
}

// none captures nothing; connections keep their own addresses.
type none struct{}

func (none) Install(context.Context, Scope) error { return nil }
func (none) Remove(context.Context) error         { return nil }
func (none) Name() string                         { return BackendNone }
func (none) OriginalDst(c net.Conn) (netip.AddrPort, error) {
	return OriginalDst(c)
}

// prefixesOf returns the prefixes of one family.
func prefixesOf(ps []netip.Prefix, v6 bool) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range ps {
		if p.Addr().Is6() == v6 {
			out = append(out, p.Masked())
		}
	}
	return out
}
