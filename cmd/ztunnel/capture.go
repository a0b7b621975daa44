// Go (1.24+) listens with Multipath TCP by default. ztunnel's listeners are
// plain TCP: eBPF inbound capture puts the inbound listener in a sockmap
// and steers connections to it with bpf_sk_assign, neither of which takes
// an MPTCP socket, and a proxy gains nothing from MPTCP on its listeners
// (clients that do not ask for it fall back to TCP anyway).
//go:debug multipathtcp=0

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"

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
	// listeners returns duplicates of the proxy's listening sockets (the
	// data plane's ListenerFiles); eBPF inbound capture hands connections
	// to the one on the inbound port. run sets it.
	listeners func() (map[string]*os.File, error)
	// addCollector, when set (run sets it to the metrics endpoint's),
	// receives the collector of meshlet_capture_* series.
	addCollector func(prometheus.Collector)
}

func (o *captureOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.backend, "capture", "none", "redirect traffic into the proxy: iptables (legacy or nft, as the system's iptables is), iptables-legacy, iptables-nft, nftables, ebpf (outbound TCP of --capture-cgroup, inbound with --capture-inbound ebpf; iptables when the kernel lacks support) or none")
	fs.StringVar(&o.netns, "capture-netns", "", "network namespace (path, e.g. /var/run/netns/pod) to program; default: the proxy's own")
	fs.StringVar(&o.inbound, "capture-inbound", "", "inbound capture to 15006: redirect, tproxy (the 15006 listener must be transparent) or none; with --capture ebpf: ebpf (sk_lookup hands connections to the 15006 listener, original destination kept as its local address; Linux 5.17+) or none; default redirect (none with --capture ebpf)")
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
	isEBPF := o.backend == capture.BackendEBPF
	switch {
	case isEBPF && (inbound == "redirect" || inbound == "tproxy"):
		return cfg, fmt.Errorf("--capture-inbound %s is a netfilter mode: with --capture ebpf use ebpf or none", inbound)
	case !isEBPF && inbound == "ebpf":
		return cfg, errors.New("--capture-inbound ebpf needs --capture ebpf")
	}
	switch inbound {
	case "ebpf":
		// The eBPF backend's inbound capture: sk_lookup, no NAT.
		cfg.Inbound = capture.InboundRedirect
	case "redirect":
		cfg.Inbound = capture.InboundRedirect
	case "tproxy":
		cfg.Inbound = capture.InboundTProxy
	case "none":
		cfg.Inbound = capture.InboundNone
	default:
		return cfg, fmt.Errorf("--capture-inbound %q: want redirect, tproxy, ebpf (with --capture ebpf) or none", o.inbound)
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
		o.exposeMetrics(nil, log)
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
	var isync *inboundSync
	if setter, ok := r.(capture.InboundListenerSetter); ok && cfg.Inbound == capture.InboundRedirect {
		// Before Install, so no connection is refused for want of it.
		isync = &inboundSync{list: o.listeners, set: setter, port: capture.DefaultInboundPort, log: log}
		if err := isync.once(); err != nil {
			return func() {}, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.Install(ctx, scope); err != nil {
		return func() {}, err
	}
	stopSync := func() {}
	if isync != nil {
		stopSync = isync.start()
	}
	o.exposeMetrics(r, log)
	log.Info("capture installed", "backend", r.Name(), "scope", scope.String(), "inbound", o.inboundMode(),
		"exclude_uid", o.uid, "dns", o.dns)
	return func() {
		stopSync()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.Remove(ctx); err != nil {
			log.Warn("capture remove", "backend", r.Name(), "err", err)
			return
		}
		log.Info("capture removed", "backend", r.Name())
	}, nil
}

// exposeMetrics registers meshlet_capture_* for r (nil: no capture).
func (o *captureOptions) exposeMetrics(r capture.Redirector, log *slog.Logger) {
	if o.addCollector != nil {
		o.addCollector(newCaptureCollector(o, r, log))
	}
}

// inboundSync keeps the eBPF inbound program's target the proxy's listener
// on the inbound port: that listener may come later (LDS) or be bound
// afresh, and until it is there steerable connections are refused.
type inboundSync struct {
	list func() (map[string]*os.File, error)
	set  capture.InboundListenerSetter
	port uint16
	log  *slog.Logger
	last []uint64 // socket cookies last set
}

// inboundSyncEvery is how often the listener is checked after start-up.
const inboundSyncEvery = time.Second

// once hands the current inbound listeners to the backend when they
// changed since the last call.
func (s *inboundSync) once() error {
	if s.list == nil {
		return errors.New("ebpf inbound capture: no access to the proxy's listeners")
	}
	files, err := s.list()
	if err != nil {
		return fmt.Errorf("ebpf inbound capture: %w", err)
	}
	defer func() {
		for _, f := range files {
			_ = f.Close()
		}
	}()
	var (
		ls      []syscall.Conn
		cookies []uint64
	)
	for _, k := range slices.Sorted(maps.Keys(files)) {
		port, cookie, ok := listeningPort(files[k])
		if ok && port == s.port {
			ls, cookies = append(ls, files[k]), append(cookies, cookie)
		}
	}
	if len(ls) == 0 || slices.Equal(cookies, s.last) {
		return nil
	}
	if err := s.set.SetInboundListeners(ls...); err != nil {
		return err
	}
	s.last = cookies
	s.log.Info("ebpf inbound capture: listener set", "port", s.port, "sockets", len(ls))
	return nil
}

// start re-checks every inboundSyncEvery until the returned func is called.
func (s *inboundSync) start() func() {
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(inboundSyncEvery)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if err := s.once(); err != nil {
					s.log.Warn("ebpf inbound capture: listener", "err", err)
				}
			}
		}
	}()
	return func() { close(done); <-stopped }
}

// listeningPort reports the local port and socket cookie of f when it is
// a listening TCP socket.
func listeningPort(f *os.File) (port uint16, cookie uint64, ok bool) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	_ = rc.Control(func(fd uintptr) {
		if v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || v != 1 {
			return
		}
		if v, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TYPE); err != nil || v != unix.SOCK_STREAM {
			return
		}
		sa, err := unix.Getsockname(int(fd))
		if err != nil {
			return
		}
		switch a := sa.(type) {
		case *unix.SockaddrInet4:
			port = uint16(a.Port)
		case *unix.SockaddrInet6:
			port = uint16(a.Port)
		default:
			return
		}
		cookie, err = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_COOKIE)
		ok = err == nil
	})
	return port, cookie, ok
}
