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
	"syscall"

	"golang.org/x/sys/unix"

	mebpf "github.com/meshlet/meshlet/ebpf"
)

// ebpfRedirector captures a cgroup's outbound TCP with cgroup BPF programs
// and a network namespace's inbound TCP with an sk_lookup program (package
// ebpf) rather than netfilter rules.
type ebpfRedirector struct {
	cfg Config

	mu   sync.Mutex
	objs *mebpf.Objects // outbound; set by Install, cleared by Remove
	inb  *mebpf.Inbound // inbound; likewise
	pins string         // pin dir of the installed scope
	// netns is the installed scope's network namespace cookie: inbound
	// listeners must live there.
	netns uint64
	// listeners wait for Install (SetInboundListeners before it): our
	// own duplicates, closed once they are in the map.
	listeners []*os.File
}

func newEBPF(cfg Config) (Redirector, error) {
	if err := checkEBPF(cfg); err != nil {
		return nil, err
	}
	probe := error(nil)
	if !cfg.DisableOutbound {
		probe = mebpf.Supported()
	}
	if probe == nil && cfg.Inbound == InboundRedirect {
		probe = mebpf.SupportedInbound()
	}
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

// Install attaches the outbound programs to the scope's cgroup (and
// get_sockopt to this process's own cgroup when that is outside it) and
// the inbound program to the scope's network namespace, after removing
// whatever an earlier Install of this scope (ours or a crashed process's)
// left pinned.
func (r *ebpfRedirector) Install(_ context.Context, s Scope) error {
	cg := s.CgroupPath()
	if cg == "" && !r.cfg.DisableOutbound {
		return fmt.Errorf("capture: ebpf: scope %v has no cgroup (--capture-cgroup)", s)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.removeLocked(); err != nil {
		return err
	}
	pins := pinDirFor(r.cfg.BPFPinDir, pinKey(s))
	if err := mebpf.Unpin(pins); err != nil {
		return fmt.Errorf("capture: ebpf: leftovers of an earlier run: %w", err)
	}
	if err := os.MkdirAll(r.cfg.BPFPinDir, 0o700); err != nil {
		return fmt.Errorf("capture: ebpf: pin dir (a bpf filesystem must be mounted there): %w", err)
	}
	r.pins = pins
	if !r.cfg.DisableOutbound {
		if err := r.installOutbound(cg); err != nil {
			_ = r.removeLocked()
			return err
		}
	}
	if r.cfg.Inbound == InboundRedirect {
		if err := r.installInbound(s); err != nil {
			_ = r.removeLocked()
			return err
		}
	}
	return nil
}

func (r *ebpfRedirector) installOutbound(cg string) error {
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
	r.objs = objs // removeLocked cleans up after a failure below
	if err := objs.Attach(cg, proxyCg); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	if err := objs.Pin(r.pins); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	return nil
}

// installInbound attaches the sk_lookup program to the scope's network
// namespace with the listeners set so far already in its map.
func (r *ebpfRedirector) installInbound(s Scope) error {
	cookie, err := netnsCookie(s)
	if err != nil {
		return fmt.Errorf("capture: ebpf inbound: %w", err)
	}
	spec, err := mebpf.LoadInboundSpec()
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	inb, err := spec.Load(ebpfInboundConfig(r.cfg))
	if err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	r.inb, r.netns = inb, cookie
	pending := r.listeners
	r.listeners = nil
	defer closeFiles(pending)
	for _, ln := range pending {
		if err := r.setListenerLocked(ln); err != nil {
			return err
		}
	}
	fd, release, err := s.open()
	if err != nil {
		return err
	}
	defer release()
	if fd < 0 { // the host: our own namespace
		f, err := os.Open("/proc/self/ns/net")
		if err != nil {
			return fmt.Errorf("capture: ebpf inbound: %w", err)
		}
		defer f.Close()
		fd = int(f.Fd())
	}
	if err := inb.AttachNetNS(fd); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	if err := inb.Pin(r.pins); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	return nil
}

// SetInboundListeners makes ls the inbound program's target sockets (see
// InboundListenerSetter).
func (r *ebpfRedirector) SetInboundListeners(ls ...syscall.Conn) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cfg.Inbound != InboundRedirect {
		return errors.New("capture: ebpf: inbound capture is off")
	}
	if r.inb == nil {
		dups := make([]*os.File, 0, len(ls))
		for _, ln := range ls {
			f, err := dupSocket(ln)
			if err != nil {
				closeFiles(dups)
				return fmt.Errorf("capture: ebpf inbound listener: %w", err)
			}
			dups = append(dups, f)
		}
		closeFiles(r.listeners)
		r.listeners = dups
		return nil
	}
	for _, ln := range ls {
		if err := r.setListenerLocked(ln); err != nil {
			return err
		}
	}
	return nil
}

func (r *ebpfRedirector) setListenerLocked(ln syscall.Conn) error {
	c, err := sockNetnsCookie(ln)
	if err != nil {
		return fmt.Errorf("capture: ebpf inbound listener: SO_NETNS_COOKIE: %w", err)
	}
	if c != r.netns {
		// bpf_sk_assign refuses a socket of another namespace; say so now
		// rather than refuse every connection.
		return errors.New("capture: ebpf inbound listener is not in the captured network namespace")
	}
	if err := r.inb.SetListener(ln); err != nil {
		return fmt.Errorf("capture: %w", err)
	}
	return nil
}

// dupSocket duplicates sc's descriptor (through Control: Fd would make a
// shared file description blocking under its owner's accept loop).
func dupSocket(sc syscall.Conn) (*os.File, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, fmt.Errorf("dup: %w", derr)
	}
	return os.NewFile(uintptr(nfd), "inbound-listener"), nil
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

// netnsCookie is the cookie of the scope's network namespace, read from a
// socket made there.
func netnsCookie(s Scope) (uint64, error) {
	var c uint64
	err := s.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		c, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("netns cookie of %v: %w", s, err)
	}
	return c, nil
}

func sockNetnsCookie(sc syscall.Conn) (uint64, error) {
	rc, err := sc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var (
		c    uint64
		gerr error
	)
	if err := rc.Control(func(fd uintptr) {
		c, gerr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	}); err != nil {
		return 0, err
	}
	return c, gerr
}

// Remove detaches everything and removes the pins.
func (r *ebpfRedirector) Remove(context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	closeFiles(r.listeners)
	r.listeners = nil
	return r.removeLocked()
}

func (r *ebpfRedirector) removeLocked() error {
	if r.objs == nil && r.inb == nil && r.pins == "" {
		return nil
	}
	var errs []error
	if r.objs != nil {
		errs = append(errs, r.objs.Detach())
	}
	if r.inb != nil {
		errs = append(errs, r.inb.Detach())
	}
	if r.pins != "" {
		errs = append(errs, mebpf.Unpin(r.pins))
	}
	if r.objs != nil {
		errs = append(errs, r.objs.Close())
	}
	if r.inb != nil {
		errs = append(errs, r.inb.Close())
	}
	r.objs, r.inb, r.pins, r.netns = nil, nil, "", 0
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
