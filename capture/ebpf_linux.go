package capture

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"

	mebpf "github.com/meshlet/meshlet/ebpf"
)

// ebpfRedirector captures a cgroup's outbound TCP with cgroup BPF programs
// (package ebpf) rather than netfilter rules.
type ebpfRedirector struct {
	cfg Config

	mu   sync.Mutex
	objs *mebpf.Objects // set by Install, cleared by Remove
	pins string         // pin dir of the installed scope
}

func newEBPF(cfg Config) (Redirector, error) {
	if err := checkEBPF(cfg); err != nil {
		return nil, err
	}
	probe := mebpf.Supported()
	fallback, err := ebpfFallback(probe)
	if err != nil {
		return nil, fmt.Errorf("capture: ebpf: %w", err)
	}
	if fallback {
		slog.Warn("ebpf capture not supported by this kernel, falling back to iptables", "reason", probe)
		return newIPTables(BackendIPTables, cfg)
	}
	return &ebpfRedirector{cfg: cfg}, nil
}

func (r *ebpfRedirector) Name() string { return BackendEBPF }

// Install attaches the programs to the scope's cgroup, and get_sockopt also
// to this process's own cgroup when that is outside it, after removing
// whatever an earlier Install of this scope (ours or a crashed process's)
// left pinned.
func (r *ebpfRedirector) Install(_ context.Context, s Scope) error {
	cg := s.CgroupPath()
	if cg == "" {
		return fmt.Errorf("capture: ebpf: scope %v has no cgroup (--capture-cgroup)", s)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.removeLocked(); err != nil {
		return err
	}
	pins := pinDirFor(r.cfg.BPFPinDir, cg)
	if err := mebpf.Unpin(pins); err != nil {
		return fmt.Errorf("capture: ebpf: leftovers of an earlier run: %w", err)
	}
	if err := os.MkdirAll(r.cfg.BPFPinDir, 0o700); err != nil {
		return fmt.Errorf("capture: ebpf: pin dir (a bpf filesystem must be mounted there): %w", err)
	}
	spec, err := mebpf.LoadSpec()
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	objs, err := spec.Load(ebpfConfig(r.cfg))
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	proxyCg, err := r.cfg.EBPFProxyCgroup, error(nil)
	if proxyCg == "" {
		proxyCg, err = ownCgroup(cg)
	}
	if err != nil {
		// The proxy can still find original destinations through
		// OriginalDst; only getsockopt(SO_ORIGINAL_DST) goes unanswered.
		slog.Warn("ebpf capture: own cgroup not found; SO_ORIGINAL_DST is answered only inside the captured cgroup",
			"cgroup", cg, "err", err)
	}
	fail := func(err error) error {
		_ = objs.Detach()
		_ = objs.Close()
		_ = mebpf.Unpin(pins)
		return fmt.Errorf("capture: %w", err)
	}
	if err := objs.Attach(cg, proxyCg); err != nil {
		return fail(err)
	}
	if err := objs.Pin(pins); err != nil {
		return fail(err)
	}
	r.objs, r.pins = objs, pins
	return nil
}

// Remove detaches everything and removes the pins.
func (r *ebpfRedirector) Remove(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removeLocked()
}

func (r *ebpfRedirector) removeLocked() error {
	if r.objs == nil {
		return nil
	}
	errs := []error{r.objs.Detach(), mebpf.Unpin(r.pins), r.objs.Close()}
	r.objs, r.pins = nil, ""
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("capture: ebpf remove: %w", err)
	}
	return nil
}

// OriginalDst reads the programs' map for a connection accepted on the
// outbound port; connections it does not know are looked up as the
// netfilter backends do (their own address, or a NAT rewrite).
func (r *ebpfRedirector) OriginalDst(c net.Conn) (netip.AddrPort, error) {
	r.mu.Lock()
	objs := r.objs
	r.mu.Unlock()
	if tc, ok := c.(*net.TCPConn); ok && objs != nil {
		od, found, err := objs.OriginalDst(tc)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("capture: %w", err)
		}
		if found {
			return od, nil
		}
	}
	return OriginalDst(c)
}

// Accelerated reports whether c is in the fast path's sockhash.
func (r *ebpfRedirector) Accelerated(c net.Conn) bool {
	r.mu.Lock()
	objs := r.objs
	r.mu.Unlock()
	tc, ok := c.(*net.TCPConn)
	return ok && objs != nil && objs.Accelerated(tc)
}

// ownCgroup returns this process's cgroup v2 directory, seen through the
// cgroup2 mount that holds appCgroup.
func ownCgroup(appCgroup string) (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	var rel string
	found := false
	for line := range strings.SplitSeq(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			rel, found = p, true
		}
	}
	if !found {
		return "", errors.New("no cgroup v2 entry in /proc/self/cgroup")
	}
	mnt, root, err := cgroup2Mount(appCgroup)
	if err != nil {
		return "", err
	}
	sub, err := filepath.Rel(root, rel)
	if err != nil || sub == ".." || strings.HasPrefix(sub, "../") {
		return "", fmt.Errorf("own cgroup %s is outside the mount of %s", rel, appCgroup)
	}
	return filepath.Join(mnt, sub), nil
}

// cgroup2Mount finds the cgroup2 mount holding dir: its mount point and the
// cgroup it shows as its root.
func cgroup2Mount(dir string) (mountPoint, root string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source super
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || sep+1 >= len(fields) || fields[sep+1] != "cgroup2" {
			continue
		}
		mp := fields[4]
		if (dir == mp || strings.HasPrefix(dir, mp+"/") || mp == "/") && len(mp) > len(mountPoint) {
			mountPoint, root = mp, fields[3]
		}
	}
	if err := sc.Err(); err != nil {
		return "", "", err
	}
	if mountPoint == "" {
		return "", "", fmt.Errorf("%s is not under a cgroup2 mount", dir)
	}
	return mountPoint, root, nil
}
