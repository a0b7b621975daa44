package capture

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
)

// ipTables programs rules with the iptables/ip6tables commands (always with
// -w, so concurrent users of the xtables lock wait instead of failing).
type ipTables struct {
	cfg     Config
	variant string // "legacy" or "nft"
	bin4    string
	bin6    string // "" when ip6tables is missing

	mu    sync.Mutex
	scope *Scope // set by Install, cleared by Remove
}

func newIPTables(backend string, cfg Config) (Redirector, error) {
	variant := strings.TrimPrefix(backend, "iptables-")
	if backend == BackendIPTables {
		v, err := probeIPTables()
		if err != nil {
			return nil, err
		}
		variant = v
	}
	r := &ipTables{cfg: cfg, variant: variant}
	var err error
	if r.bin4, err = variantBinary("iptables", variant); err != nil {
		return nil, err
	}
	if r.bin6, err = variantBinary("ip6tables", variant); err != nil {
		if !cfg.DisableIPv6 {
			return nil, err
		}
		r.bin6 = ""
	}
	return r, nil
}

// probeIPTables picks the variant the system's iptables command is (what
// `iptables -V` prints in parentheses), else whichever variant is installed,
// nft first.
func probeIPTables() (string, error) {
	if out, err := exec.Command("iptables", "-V").CombinedOutput(); err == nil {
		switch s := string(out); {
		case strings.Contains(s, "nf_tables"):
			return "nft", nil
		case strings.Contains(s, "legacy"):
			return "legacy", nil
		default:
			// Before 1.8 there was only the legacy backend and -V did not
			// name it.
			return "legacy", nil
		}
	}
	for _, v := range []string{"nft", "legacy"} {
		if _, err := exec.LookPath("iptables-" + v); err == nil {
			return v, nil
		}
	}
	return "", errors.New("capture: iptables: no iptables command found")
}

// variantBinary returns the command for a variant: iptables-nft, or plain
// iptables when that is the variant.
func variantBinary(base, variant string) (string, error) {
	if p, err := exec.LookPath(base + "-" + variant); err == nil {
		return p, nil
	}
	if out, err := exec.Command(base, "-V").CombinedOutput(); err == nil {
		s := string(out)
		if variant == "nft" && strings.Contains(s, "nf_tables") || variant == "legacy" && !strings.Contains(s, "nf_tables") {
			return base, nil
		}
	}
	return "", fmt.Errorf("capture: %s: no %s-%s command", base, base, variant)
}

func (r *ipTables) Name() string { return "iptables-" + r.variant }

func (r *ipTables) OriginalDst(c net.Conn) (netip.AddrPort, error) { return OriginalDst(c) }

func (r *ipTables) bins() []struct {
	bin string
	v6  bool
} {
	out := []struct {
		bin string
		v6  bool
	}{{r.bin4, false}}
	if r.bin6 != "" {
		out = append(out, struct {
			bin string
			v6  bool
		}{r.bin6, true})
	}
	return out
}

func (r *ipTables) Install(ctx context.Context, s Scope) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := s.Do(func() error {
		// Whatever is there (our earlier Install, a crashed run's leftovers)
		// goes first: Install always ends with exactly the planned rules.
		if err := r.cleanup(ctx); err != nil {
			return err
		}
		for _, b := range r.bins() {
			if b.v6 && r.cfg.DisableIPv6 {
				continue
			}
			if err := r.apply(ctx, b.bin, iptablesPlan(r.cfg, b.v6)); err != nil {
				return err
			}
			if r.cfg.Inbound == InboundTProxy {
				if err := installTProxyRoute(ctx, r.cfg, b.v6); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		// Leave nothing half-installed.
		_ = s.Do(func() error { return r.cleanup(context.WithoutCancel(ctx)) })
		return fmt.Errorf("capture %s in %v: %w", r.Name(), s, err)
	}
	r.scope = &s
	return nil
}

func (r *ipTables) Remove(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.scope == nil {
		return nil
	}
	s := *r.scope
	if err := s.Do(func() error { return r.cleanup(ctx) }); err != nil {
		return fmt.Errorf("capture %s in %v: remove: %w", r.Name(), s, err)
	}
	r.scope = nil
	return nil
}

func (r *ipTables) apply(ctx context.Context, bin string, p ipPlan) error {
	for _, c := range p.chains {
		if _, err := run(ctx, bin, "-w", "-t", c.table, "-N", c.chain); err != nil {
			return err
		}
	}
	for _, set := range [][]ipRule{p.rules, p.jumps} {
		for _, rl := range set {
			args := append([]string{"-w", "-t", rl.table, "-A", rl.chain}, rl.args...)
			if _, err := run(ctx, bin, args...); err != nil {
				return err
			}
		}
	}
	return nil
}

// cleanup removes every jump into a MESHLET_ chain and every MESHLET_
// chain, in both families, and the TPROXY route. It reads the live rules
// (iptables -S) rather than recomputing the plan, so leftovers of a run
// with another configuration go too.
func (r *ipTables) cleanup(ctx context.Context) error {
	for _, b := range r.bins() {
		for _, table := range []string{"nat", "mangle"} {
			if err := cleanupTable(ctx, b.bin, table); err != nil {
				return err
			}
		}
		removeTProxyRoute(ctx, r.cfg, b.v6)
	}
	return nil
}

func cleanupTable(ctx context.Context, bin, table string) error {
	out, err := run(ctx, bin, "-w", "-t", table, "-S")
	if err != nil {
		return err
	}
	var ours []string
	for line := range strings.Lines(out) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 2 && f[0] == "-N" && strings.HasPrefix(f[1], namePrefix):
			ours = append(ours, f[1])
		case len(f) >= 2 && f[0] == "-A" && !strings.HasPrefix(f[1], namePrefix) && jumpsToOurs(f):
			del := append([]string{"-w", "-t", table, "-D"}, f[1:]...)
			if _, err := run(ctx, bin, del...); err != nil {
				return err
			}
		}
	}
	for _, c := range ours {
		if _, err := run(ctx, bin, "-w", "-t", table, "-F", c); err != nil {
			return err
		}
	}
	for _, c := range ours {
		if _, err := run(ctx, bin, "-w", "-t", table, "-X", c); err != nil {
			return err
		}
	}
	return nil
}

func jumpsToOurs(f []string) bool {
	for i := 0; i+1 < len(f); i++ {
		if (f[i] == "-j" || f[i] == "-g") && strings.HasPrefix(f[i+1], namePrefix) {
			return true
		}
	}
	return false
}
