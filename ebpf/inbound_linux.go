package ebpf

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	cebpf "github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Inbound is the live inbound (sk_lookup) program and its maps.
type Inbound struct {
	objs inboundObjects
	link *link.NetNsLink // set by AttachNetNS
}

// hookSkLookup is the link's pin file name.
const hookSkLookup = "sk_lookup"

// SupportedInbound probes the kernel for what inbound capture uses:
// sk_lookup programs (5.9), bpf_sk_assign from them, sockmaps, and the
// context's ingress interface (5.17), for which it loads the program.
func SupportedInbound() error {
	if err := supportedInboundTypes(); err != nil {
		return err
	}
	s, err := LoadInboundSpec()
	if err != nil {
		return err
	}
	_ = rlimit.RemoveMemlock()
	var objs inboundObjects
	if err := s.cs.Copy().LoadAndAssign(&objs, nil); err != nil {
		return loadInboundErr(err)
	}
	return objs.Close()
}

func supportedInboundTypes() error {
	if err := features.HaveProgramType(cebpf.SkLookup); err != nil {
		return notSupported("program type SkLookup", err)
	}
	if err := features.HaveProgramHelper(cebpf.SkLookup, asm.FnSkAssign); err != nil {
		return notSupported("helper bpf_sk_assign in SkLookup", err)
	}
	if err := features.HaveMapType(cebpf.SockMap); err != nil {
		return notSupported("map type SockMap", err)
	}
	return nil
}

// Load creates the inbound program and maps and fills the port maps from
// cfg. The listener map starts empty: until SetListener, steerable
// connections are refused.
func (s *InboundSpec) Load(cfg InboundConfig) (*Inbound, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := supportedInboundTypes(); err != nil {
		return nil, err
	}
	_ = rlimit.RemoveMemlock()
	in := &Inbound{}
	if err := s.cs.Copy().LoadAndAssign(&in.objs, nil); err != nil {
		return nil, loadInboundErr(err)
	}
	if err := in.fill(cfg); err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}

// loadInboundErr wraps ErrNotSupported around a load error the kernel's
// age explains.
func loadInboundErr(err error) error {
	var ve *cebpf.VerifierError
	if errors.Is(err, cebpf.ErrNotSupported) || errors.As(err, &ve) {
		// A verifier error here is most likely a kernel before 5.17,
		// whose sk_lookup context has no ingress_ifindex.
		return fmt.Errorf("ebpf: load inbound program: %w (%w)", ErrNotSupported, err)
	}
	return fmt.Errorf("ebpf: load inbound program: %w", err)
}

func (in *Inbound) fill(cfg InboundConfig) error {
	m := in.objs.inboundMaps
	if err := m.InboundConfigMap.Put(uint32(0), cfg.config()); err != nil {
		return fmt.Errorf("ebpf: inbound config: %w", err)
	}
	one := uint8(1)
	for _, p := range cfg.excluded() {
		if err := m.InboundExclude.Put(p, one); err != nil {
			return fmt.Errorf("ebpf: inbound exclude port %d: %w", p, err)
		}
	}
	for _, p := range cfg.included() {
		if err := m.InboundInclude.Put(p, one); err != nil {
			return fmt.Errorf("ebpf: inbound include port %d: %w", p, err)
		}
	}
	return nil
}

// Listener slots of inbound_listener.
const (
	slotV4 = 0
	slotV6 = 1
)

// SetListener makes ln (a listening TCP socket in the namespace the
// program is attached to, e.g. a *net.TCPListener or an *os.File from
// one) the target of steered connections of its family: an AF_INET6
// socket takes IPv6, and IPv4 too when no AF_INET one is set and it is not
// v6-only. The map holds its own reference: ln may be closed afterwards.
// A socket that closes leaves the map by itself.
func (in *Inbound) SetListener(ln syscall.Conn) error {
	rc, err := ln.SyscallConn()
	if err != nil {
		return fmt.Errorf("ebpf: inbound listener: %w", err)
	}
	var serr error
	// Control, not Fd: Fd would switch a shared file description to
	// blocking mode under the proxy's accept loop.
	cerr := rc.Control(func(fd uintptr) {
		dom, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		if err != nil {
			serr = fmt.Errorf("SO_DOMAIN: %w", err)
			return
		}
		if acc, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc != 1 {
			serr = errors.New("not a listening socket")
			return
		}
		// Go listens with Multipath TCP by default (1.24+); neither a
		// sockmap nor bpf_sk_assign takes such a socket.
		if proto, err := unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PROTOCOL); err == nil && proto == unix.IPPROTO_MPTCP {
			serr = errors.New("a Multipath TCP socket: listen with plain TCP (net.ListenConfig.SetMultipathTCP(false), GODEBUG=multipathtcp=0)")
			return
		}
		slot := uint32(slotV4)
		if dom == unix.AF_INET6 {
			slot = slotV6
		}
		serr = in.objs.InboundListener.Put(slot, uint64(fd))
	})
	if err := errors.Join(cerr, serr); err != nil {
		return fmt.Errorf("ebpf: inbound listener: %w", err)
	}
	return nil
}

// ListenerCookies returns the socket cookies of the listeners in the map
// (0 for an empty slot), v4 slot first, to tell whether a listener is
// still the one set.
func (in *Inbound) ListenerCookies() ([2]uint64, error) {
	var out [2]uint64
	for i := range out {
		var c uint64
		err := in.objs.InboundListener.Lookup(uint32(i), &c)
		if err != nil && !errors.Is(err, cebpf.ErrKeyNotExist) {
			return out, fmt.Errorf("ebpf: inbound listener slot %d: %w", i, err)
		}
		out[i] = c
	}
	return out, nil
}

// AttachNetNS attaches the program to the network namespace open as nsFd
// (e.g. /proc/self/ns/net, /var/run/netns/NAME).
func (in *Inbound) AttachNetNS(nsFd int) error {
	if in.link != nil {
		return errors.New("ebpf: inbound program already attached")
	}
	l, err := link.AttachNetNs(nsFd, in.objs.InboundLookup)
	if err != nil {
		if errors.Is(err, cebpf.ErrNotSupported) {
			return fmt.Errorf("ebpf: attach sk_lookup: %w (%w)", ErrNotSupported, err)
		}
		return fmt.Errorf("ebpf: attach sk_lookup: %w", err)
	}
	in.link = l
	return nil
}

// Pin pins the link and the maps under dir (on a bpf filesystem) next to
// the outbound ones, so Unpin(dir) removes both.
func (in *Inbound) Pin(dir string) error {
	if err := checkBPFFS(filepath.Dir(dir)); err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("ebpf: pin dir: %w", err)
	}
	if in.link != nil {
		if err := in.link.Pin(filepath.Join(dir, hookSkLookup)); err != nil {
			return fmt.Errorf("ebpf: pin link %s: %w", hookSkLookup, err)
		}
	}
	m := in.objs.inboundMaps
	for name, mp := range map[string]*cebpf.Map{
		"inbound_config": m.InboundConfigMap, "inbound_exclude": m.InboundExclude,
		"inbound_include": m.InboundInclude, "inbound_listener": m.InboundListener, "inbound_stats": m.InboundStats,
	} {
		if err := mp.Pin(filepath.Join(dir, "map_"+name)); err != nil {
			return fmt.Errorf("ebpf: pin map %s: %w", name, err)
		}
	}
	return nil
}

// Detach detaches the program now, pinned or not.
func (in *Inbound) Detach() error {
	if in.link == nil {
		return nil
	}
	if err := in.link.Detach(); err != nil && !errors.Is(err, cebpf.ErrNotSupported) {
		return fmt.Errorf("ebpf: detach %s: %w", hookSkLookup, err)
	}
	return nil
}

// Close releases the link (a pinned one stays attached until Unpin or
// Detach), the program and the maps.
func (in *Inbound) Close() error {
	var errs []error
	if in.link != nil {
		if err := in.link.Close(); err != nil {
			errs = append(errs, fmt.Errorf("ebpf: close link %s: %w", hookSkLookup, err))
		}
		in.link = nil
	}
	if err := in.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("ebpf: close inbound objects: %w", err))
	}
	return errors.Join(errs...)
}

// InboundStats are the inbound program's counters.
type InboundStats struct {
	Steered uint64 // connections handed to the proxy's listener
	Refused uint64 // steerable connections refused: no usable listener
}

// Stats sums the per-CPU counters.
func (in *Inbound) Stats() (InboundStats, error) {
	var st InboundStats
	for i, dst := range []*uint64{&st.Steered, &st.Refused} {
		var per []uint64
		if err := in.objs.InboundStats.Lookup(uint32(i), &per); err != nil {
			return InboundStats{}, fmt.Errorf("ebpf: inbound stats: %w", err)
		}
		for _, v := range per {
			*dst += v
		}
	}
	return st, nil
}

// AttachedInbound counts the sk_lookup programs attached to the network
// namespace open as nsFd (whoever attached them), e.g. to check that
// nothing is left after removal.
func AttachedInbound(nsFd int) (int, error) {
	r, err := link.QueryPrograms(link.QueryOptions{Target: nsFd, Attach: cebpf.AttachSkLookup})
	if err != nil {
		return 0, fmt.Errorf("ebpf: query sk_lookup: %w", err)
	}
	return len(r.Programs), nil
}
