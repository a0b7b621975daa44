package ebpf

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
)

// Objects are the live maps and programs of one capture.
type Objects struct {
	objs captureObjects
	fast bool
	// links are the cgroup attachments, named as pinned.
	links map[string]link.Link
	// skMsg is set while fastpath_msg is attached to the sockhash.
	skMsg bool
}

// Load creates the maps and programs in the kernel and fills the maps from
// cfg. A kernel that cannot load them yields an error wrapping
// ErrNotSupported.
func (s *Spec) Load(cfg Config) (*Objects, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := Supported(); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	_ = rlimit.RemoveMemlock()
	o := &Objects{fast: cfg.FastPath, links: map[string]link.Link{}}
	spec := s.cs.Copy()
	if err := spec.LoadAndAssign(&o.objs, nil); err != nil {
		if errors.Is(err, cebpf.ErrNotSupported) {
			return nil, fmt.Errorf("ebpf: load capture programs: %w (%w)", ErrNotSupported, err)
		}
		var ve *cebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("ebpf: verifier rejected capture programs: %w (%w)", ErrNotSupported, err)
		}
		return nil, fmt.Errorf("ebpf: load capture programs: %w", err)
	}
	if err := o.fill(cfg); err != nil {
		o.Close()
		return nil, err
	}
	return o, nil
}

func (o *Objects) fill(cfg Config) error {
	m := o.objs.captureMaps
	if err := m.ConfigMap.Put(uint32(0), cfg.config()); err != nil {
		return fmt.Errorf("ebpf: config_map: %w", err)
	}
	one := uint8(1)
	for _, p := range cfg.ExcludePorts {
		if err := m.ExcludePorts.Put(p, one); err != nil {
			return fmt.Errorf("ebpf: exclude port %d: %w", p, err)
		}
	}
	put := func(name string, v4, v6 *cebpf.Map, ps []netip.Prefix) error {
		for _, p := range ps {
			var err error
			if p.Addr().Unmap().Is4() {
				p = netip.PrefixFrom(p.Addr().Unmap(), min(p.Bits(), 32))
				err = v4.Put(lpm4Key(p), one)
			} else {
				err = v6.Put(lpm6Key(p), one)
			}
			if err != nil {
				return fmt.Errorf("ebpf: %s %v: %w", name, p, err)
			}
		}
		return nil
	}
	if err := put("exclude CIDR", m.Exclude4, m.Exclude6, cfg.ExcludeCIDRs); err != nil {
		return err
	}
	return put("include CIDR", m.Include4, m.Include6, cfg.IncludeCIDRs)
}

// Hook names, also the pin file names.
const (
	hookConnect4     = "connect4"
	hookConnect6     = "connect6"
	hookSockOps      = "sock_ops"
	hookGetsockopt   = "get_sockopt"
	hookGetpeername4 = "getpeername4"
	hookGetpeername6 = "getpeername6"
	// hookProxyGetsockopt is get_sockopt on the proxy's own cgroup when it
	// is outside the application's.
	hookProxyGetsockopt = "get_sockopt_proxy"
)

// Attach attaches the programs to the cgroup v2 directory appCgroup (the
// applications whose connects are captured; it may hold the proxy too) and,
// when proxyCgroup is neither empty nor inside appCgroup, get_sockopt also
// to proxyCgroup so the proxy's SO_ORIGINAL_DST lookups are answered.
func (o *Objects) Attach(appCgroup, proxyCgroup string) error {
	if err := checkCgroup2(appCgroup); err != nil {
		return err
	}
	p := o.objs.capturePrograms
	for _, h := range []struct {
		name string
		prog *cebpf.Program
		at   cebpf.AttachType
	}{
		{hookConnect4, p.Connect4, cebpf.AttachCGroupInet4Connect},
		{hookConnect6, p.Connect6, cebpf.AttachCGroupInet6Connect},
		{hookSockOps, p.SockOps, cebpf.AttachCGroupSockOps},
		{hookGetsockopt, p.GetSockopt, cebpf.AttachCGroupGetsockopt},
		{hookGetpeername4, p.Getpeername4, cebpf.AttachCgroupInet4GetPeername},
		{hookGetpeername6, p.Getpeername6, cebpf.AttachCgroupInet6GetPeername},
	} {
		if err := o.attach(h.name, appCgroup, h.prog, h.at); err != nil {
			return err
		}
	}
	if proxyCgroup != "" && !within(proxyCgroup, appCgroup) {
		if err := o.attach(hookProxyGetsockopt, proxyCgroup, p.GetSockopt, cebpf.AttachCGroupGetsockopt); err != nil {
			return err
		}
	}
	if o.fast {
		err := link.RawAttachProgram(link.RawAttachProgramOptions{
			Target:  o.objs.Fastpath.FD(),
			Program: p.FastpathMsg,
			Attach:  cebpf.AttachSkMsgVerdict,
		})
		if err != nil {
			return fmt.Errorf("ebpf: attach sk_msg to the sockhash: %w", err)
		}
		o.skMsg = true
	}
	return nil
}

func (o *Objects) attach(name, cgroup string, prog *cebpf.Program, at cebpf.AttachType) error {
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: at, Program: prog})
	if err != nil {
		if errors.Is(err, cebpf.ErrNotSupported) {
			return fmt.Errorf("ebpf: attach %s to %s: %w (%w)", name, cgroup, ErrNotSupported, err)
		}
		return fmt.Errorf("ebpf: attach %s to %s: %w", name, cgroup, err)
	}
	o.links[name] = l
	return nil
}

// within reports whether dir is root or below it.
func within(dir, root string) bool {
	rel, err := filepath.Rel(root, dir)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// Pin pins every link and map under dir (on a bpf filesystem), so a
// restarted proxy finds them (Unpin) and the capture outlives a crash, as
// netfilter rules do.
func (o *Objects) Pin(dir string) error {
	if err := checkBPFFS(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ebpf: pin dir: %w", err)
	}
	names := slices.Sorted(maps.Keys(o.links))
	for _, name := range names {
		if err := o.links[name].Pin(filepath.Join(dir, name)); err != nil {
			return fmt.Errorf("ebpf: pin link %s: %w", name, err)
		}
	}
	for name, m := range o.maps() {
		if err := m.Pin(filepath.Join(dir, "map_"+name)); err != nil {
			return fmt.Errorf("ebpf: pin map %s: %w", name, err)
		}
	}
	return nil
}

func (o *Objects) maps() map[string]*cebpf.Map {
	m := o.objs.captureMaps
	return map[string]*cebpf.Map{
		"config": m.ConfigMap, "exclude_ports": m.ExcludePorts,
		"exclude4": m.Exclude4, "exclude6": m.Exclude6, "include4": m.Include4, "include6": m.Include6,
		"orig_by_cookie": m.OrigByCookie, "orig_by_port": m.OrigByPort, "fastpath": m.Fastpath,
		"stats": m.Stats,
	}
}

// Detach detaches every link of o now, pinned or not.
func (o *Objects) Detach() error {
	var errs []error
	for name, l := range o.links {
		if err := l.Detach(); err != nil && !errors.Is(err, cebpf.ErrNotSupported) {
			errs = append(errs, fmt.Errorf("ebpf: detach %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// Close detaches the links this process holds (pinned ones stay until
// Unpin) and releases the maps and programs.
func (o *Objects) Close() error {
	var errs []error
	for name, l := range o.links {
		if err := l.Close(); err != nil {
			errs = append(errs, fmt.Errorf("ebpf: close link %s: %w", name, err))
		}
		delete(o.links, name)
	}
	if o.skMsg {
		// The attachment dies with the sockhash; detach explicitly anyway
		// so a pinned map does not keep redirecting.
		_ = link.RawDetachProgram(link.RawDetachProgramOptions{
			Target: o.objs.Fastpath.FD(), Program: o.objs.FastpathMsg, Attach: cebpf.AttachSkMsgVerdict,
		})
		o.skMsg = false
	}
	if err := o.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("ebpf: close objects: %w", err))
	}
	return errors.Join(errs...)
}

// Unpin removes everything pinned under dir and dir itself: links whose
// pin was their last reference detach, maps whose pin was their last
// reference are freed. It cleans up after a crashed run as well as after
// Pin; a missing dir is not an error.
func Unpin(dir string) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ebpf: unpin: %w", err)
	}
	var errs []error
	for _, e := range ents {
		path := filepath.Join(dir, e.Name())
		// Detach a pinned link right away: removing its last reference
		// frees it only after an RCU grace period.
		if l, err := link.LoadPinnedLink(path, nil); err == nil {
			if err := l.Detach(); err != nil && !errors.Is(err, cebpf.ErrNotSupported) {
				errs = append(errs, fmt.Errorf("ebpf: detach %s: %w", e.Name(), err))
			}
			l.Close()
		}
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("ebpf: unpin %s: %w", e.Name(), err))
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("ebpf: unpin: %w", err))
	}
	return errors.Join(errs...)
}
