package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/meshlet/meshlet/capture"
)

// captureOptions are run's --capture* flags: traffic redirection into the
// proxy's 15001/15006 (and 15053) listeners.
type captureOptions struct {
	backend      string
	netns        string
	inbound      string
	excludePorts string
	excludeCIDRs string
	uid, gid     int
	dns          bool
	cgroup       string // ebpf: cgroup v2 directory captured
	bpffs        string // ebpf: pin directory on a bpf filesystem
	fastPath     bool   // ebpf: sockhash fast path between same-node sockets
}

func (o *captureOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.backend, "capture", "none", "redirect traffic into the proxy: iptables (legacy or nft, as the system's iptables is), iptables-legacy, iptables-nft, nftables, ebpf (outbound TCP of --capture-cgroup; iptables when the kernel lacks support) or none")
	fs.StringVar(&o.netns, "capture-netns", "", "network namespace (path, e.g. /var/run/netns/pod) to program; default: the proxy's own")
	fs.StringVar(&o.inbound, "capture-inbound", "", "inbound capture to 15006: redirect, tproxy (the 15006 listener must be transparent) or none; default redirect (none with --capture ebpf)")
	fs.StringVar(&o.excludePorts, "capture-exclude-ports", "15008,15020,15021,15090", "comma-separated TCP ports never captured, inbound or outbound")
	fs.StringVar(&o.excludeCIDRs, "capture-exclude-cidrs", "", "comma-separated destination CIDRs outbound capture leaves alone")
	fs.IntVar(&o.uid, "capture-uid", capture.DefaultProxyUID, "uid whose traffic is never captured (run the proxy as this uid)")
	fs.IntVar(&o.gid, "capture-gid", capture.DefaultProxyGID, "gid whose traffic is never captured")
	fs.BoolVar(&o.dns, "capture-dns", false, "also redirect DNS (udp/tcp 53) to 15053; needs a DNS proxy there")
	fs.StringVar(&o.cgroup, "capture-cgroup", "", "--capture ebpf: cgroup v2 directory whose processes' outbound TCP is captured (e.g. /sys/fs/cgroup/app)")
	fs.StringVar(&o.bpffs, "capture-bpffs", capture.DefaultBPFPinDir, "--capture ebpf: directory on a bpf filesystem where links and maps are pinned")
	fs.BoolVar(&o.fastPath, "capture-ebpf-fastpath", false, "--capture ebpf: hand data between same-node sockets of the cgroup with sockmap (their readers must not splice; keep the proxy outside the cgroup)")
}

// config turns the flags into a capture.Config.
func (o *captureOptions) config() (capture.Config, error) {
	cfg := capture.Config{
		ProxyUID: uint32(o.uid), ProxyUIDSet: true,
		ProxyGID: uint32(o.gid), ProxyGIDSet: true,
		DisableDNS: !o.dns,
	}
	if o.uid < 0 || o.gid < 0 {
		return cfg, fmt.Errorf("--capture-uid/--capture-gid: must not be negative")
	}
	inbound := o.inboundMode()
	cfg.BPFPinDir, cfg.EBPFFastPath = o.bpffs, o.fastPath
	switch inbound {
	case "redirect":
		cfg.Inbound = capture.InboundRedirect
	case "tproxy":
		cfg.Inbound = capture.InboundTProxy
	case "none":
		cfg.Inbound = capture.InboundNone
	default:
		return cfg, fmt.Errorf("--capture-inbound %q: want redirect, tproxy or none", o.inbound)
	}
	for f := range strings.SplitSeq(o.excludePorts, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := strconv.ParseUint(f, 10, 16)
		if err != nil || p == 0 {
			return cfg, fmt.Errorf("--capture-exclude-ports: %q is not a port", f)
		}
		cfg.OutboundExcludePorts = append(cfg.OutboundExcludePorts, uint16(p))
		cfg.InboundExcludePorts = append(cfg.InboundExcludePorts, uint16(p))
	}
	for f := range strings.SplitSeq(o.excludeCIDRs, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, err := netip.ParsePrefix(f)
		if err != nil {
			return cfg, fmt.Errorf("--capture-exclude-cidrs: %w", err)
		}
		cfg.OutboundExcludeCIDRs = append(cfg.OutboundExcludeCIDRs, p)
	}
	return cfg, nil
}

// inboundMode is --capture-inbound with its default filled in: eBPF
// capture sees only the cgroup's own connects, so it has no inbound.
func (o *captureOptions) inboundMode() string {
	switch {
	case o.inbound != "":
		return o.inbound
	case o.backend == capture.BackendEBPF:
		return "none"
	}
	return "redirect"
}

// startCapture installs the redirection once the proxy's listeners are up
// (earlier, captured connections would be refused). The returned func
// removes it; call it after the drain so in-flight connections keep their
// path. It is never nil.
func startCapture(o *captureOptions, log *slog.Logger) (func(), error) {
	if o.backend == "" || o.backend == capture.BackendNone {
		return func() {}, nil
	}
	cfg, err := o.config()
	if err != nil {
		return func() {}, err
	}
	r, err := capture.New(o.backend, cfg)
	if err != nil {
		return func() {}, err
	}
	scope := capture.Host()
	if o.netns != "" {
		scope = capture.NetNSPath(o.netns)
	}
	if o.backend == capture.BackendEBPF {
		if o.cgroup == "" {
			return func() {}, fmt.Errorf("--capture ebpf needs --capture-cgroup")
		}
		scope = scope.WithCgroup(o.cgroup)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Install(ctx, scope); err != nil {
		return func() {}, err
	}
	log.Info("capture installed", "backend", r.Name(), "scope", scope.String(), "inbound", o.inboundMode(),
		"exclude_uid", o.uid, "dns", o.dns)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.Remove(ctx); err != nil {
			log.Warn("capture remove", "backend", r.Name(), "err", err)
			return
		}
		log.Info("capture removed", "backend", r.Name())
	}, nil
}
