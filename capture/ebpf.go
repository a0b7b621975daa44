package capture

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"path/filepath"
	"syscall"

	mebpf "github.com/meshlet/meshlet/ebpf"
)

// DefaultBPFPinDir is where the eBPF backend pins its links and maps, one
// subdirectory per captured cgroup.
const DefaultBPFPinDir = "/sys/fs/bpf/meshlet"

// Accelerator is implemented by a Redirector whose connections may bypass
// the TCP stack (the eBPF backend with Config.EBPFFastPath): data the fast
// path hands to such a socket never reaches splice(2), so a proxy must copy
// a connection for which Accelerated is true with a read/write loop, not
// io.Copy between two *net.TCPConn.
type Accelerator interface {
	Accelerated(c net.Conn) bool
}

// InboundListenerSetter is implemented by the eBPF backend, whose inbound
// capture (Config.Inbound InboundRedirect: an sk_lookup program, no NAT)
// hands connections to a listening socket rather than to a port: the
// proxy's inbound listener, a plain TCP (not Multipath TCP) socket in the
// captured network namespace. Set it before Install (keep it open until
// Install returns) so that no connection is refused in between, and again
// whenever the listener is replaced; the backend keeps its own reference.
// Until one is set, inbound connections that would be captured are
// refused, as a REDIRECT to a closed port would be.
type InboundListenerSetter interface {
	SetInboundListeners(ls ...syscall.Conn) error
}

// checkEBPF rejects what BPF capture does not do: outbound TCP of a
// cgroup (cgroup programs) and inbound TCP steered to the proxy's listener
// (sk_lookup; Inbound InboundRedirect means this here), no TPROXY, no DNS.
func checkEBPF(cfg Config) error {
	switch {
	case cfg.DisableOutbound && cfg.Inbound == InboundNone:
		return errors.New("capture: ebpf: outbound is disabled and inbound is none: nothing to capture")
	case cfg.Inbound == InboundTProxy:
		return errors.New("capture: ebpf captures inbound with sk_lookup, not TPROXY: set inbound redirect (--capture-inbound ebpf) or none")
	case !cfg.DisableDNS:
		return errors.New("capture: ebpf does not capture DNS: disable it or use iptables/nftables")
	}
	return nil
}

// ebpfFallback decides, from the kernel probe's result, whether to use
// iptables instead: only when the kernel lacks support. Other errors
// (missing privileges) are the caller's to see.
func ebpfFallback(probe error) (useIPTables bool, err error) {
	switch {
	case probe == nil:
		return false, nil
	case errors.Is(probe, mebpf.ErrNotSupported):
		return true, nil
	}
	return false, probe
}

// ebpfConfig is what the programs are told for cfg.
func ebpfConfig(cfg Config) mebpf.Config {
	return mebpf.Config{
		OutboundPort: cfg.OutboundPort,
		ProxyUID:     cfg.ProxyUID,
		ProxyGID:     cfg.ProxyGID,
		ProxyMark:    cfg.ProxyMark,
		ExcludePorts: cfg.OutboundExcludePorts,
		ExcludeCIDRs: cfg.OutboundExcludeCIDRs,
		IncludeCIDRs: cfg.OutboundIncludeCIDRs,
		DisableIPv6:  cfg.DisableIPv6,
		FastPath:     cfg.EBPFFastPath,
	}
}

// ebpfInboundConfig is what the inbound program is told for cfg.
func ebpfInboundConfig(cfg Config) mebpf.InboundConfig {
	return mebpf.InboundConfig{
		ExcludePorts: cfg.InboundExcludePorts,
		IncludePorts: cfg.InboundIncludePorts,
		DisableIPv6:  cfg.DisableIPv6,
	}
}

// pinKey names what a scope's pins belong to: its cgroup, or its network
// namespace when only inbound is captured.
func pinKey(s Scope) string {
	if cg := s.CgroupPath(); cg != "" {
		return cg
	}
	return "netns:" + s.String()
}

// pinDirFor is the pin directory of a captured cgroup: stable across
// restarts, so a new process finds (and removes) what a crashed one left.
func pinDirFor(base, cgroup string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(cgroup)))
	return filepath.Join(base, "cg-"+hex.EncodeToString(sum[:8]))
}
