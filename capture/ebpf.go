package capture

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"path/filepath"

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

// checkEBPF rejects what cgroup BPF capture does not do: it sees the
// cgroup's own connects, so it captures outbound TCP only.
func checkEBPF(cfg Config) error {
	switch {
	case cfg.DisableOutbound:
		return errors.New("capture: ebpf captures outbound TCP only, and outbound is disabled")
	case cfg.Inbound != InboundNone:
		return errors.New("capture: ebpf does not capture inbound traffic: set inbound none (--capture-inbound none)")
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

// pinDirFor is the pin directory of a captured cgroup: stable across
// restarts, so a new process finds (and removes) what a crashed one left.
func pinDirFor(base, cgroup string) string {
	sum := sha256.Sum256([]byte(filepath.Clean(cgroup)))
	return filepath.Join(base, "cg-"+hex.EncodeToString(sum[:8]))
}
