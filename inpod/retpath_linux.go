package inpod

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"github.com/meshlet/meshlet/capture"
)

// The return path of original-source delivery. The proxy delivers an
// inbound connection from inside the pod with a socket bound to the
// client's address (IP_TRANSPARENT) and carrying the proxy mark; the pod's
// replies are addressed to the client, which routing would send out of the
// pod. So, as istio-cni does for ztunnel: a packet arriving with the proxy
// mark (only the proxy's own sockets loop back with it: marks do not cross
// namespaces) marks its connection (CONNMARK), the connection's later
// packets leaving the pod take that mark back, and a policy route for the
// mark delivers them locally, to the proxy's socket.
const (
	// ReturnMark is the connection mark of original-source deliveries.
	ReturnMark = 0x53b
	// ReturnTable is the routing table its policy rule looks up: one
	// local default route via lo.
	ReturnTable = 134
)

// Names of what the return path creates. The iptables chains do not use
// capture's MESHLET_ prefix: capture's cleanup removes every chain with
// that prefix when the pod's redirection goes, and the return path must
// outlive it until the pod's connections have drained.
const (
	retChainPre = "MESHLET-INPOD-PRE"
	retChainOut = "MESHLET-INPOD-OUT"
	retNFTable  = "MESHLET_INPOD"
)

// returnPath is the return path programmed in one pod's netns with the
// same tool as the pod's capture.
type returnPath struct {
	backend   string // a capture backend name: iptables-legacy, iptables-nft, nftables
	proxyMark uint32
}

// newReturnPath returns the return path for a capture backend, or nil
// when it has none (the agent programs the pod, as istio-cni does).
func newReturnPath(backend string, proxyMark uint32) *returnPath {
	switch backend {
	case capture.BackendIPTablesLegacy, capture.BackendIPTablesNFT, capture.BackendNFTables:
		return &returnPath{backend: backend, proxyMark: proxyMark}
	}
	return nil
}

// install replaces whatever a crashed run left with the return path.
func (r *returnPath) install(ctx context.Context, ns *os.File) error {
	err := inNetns(ns, func() error {
		if err := r.cleanup(ctx, ns); err != nil {
			return err
		}
		if r.backend == capture.BackendNFTables {
			if err := r.nftInstall(ns); err != nil {
				return err
			}
		} else {
			for _, bin := range r.iptablesBins() {
				if err := r.iptablesInstall(ctx, bin); err != nil {
					return err
				}
			}
		}
		return routeInstall(ctx)
	})
	if err != nil {
		_ = r.remove(context.WithoutCancel(ctx), ns)
		return fmt.Errorf("return path (%s): %w", r.backend, err)
	}
	return nil
}

// remove deletes the return path; removing what is not there is fine.
func (r *returnPath) remove(ctx context.Context, ns *os.File) error {
	err := inNetns(ns, func() error { return r.cleanup(ctx, ns) })
	if err != nil {
		return fmt.Errorf("return path (%s): remove: %w", r.backend, err)
	}
	return nil
}

func (r *returnPath) cleanup(ctx context.Context, ns *os.File) error {
	var errs []error
	if r.backend == capture.BackendNFTables {
		errs = append(errs, nftRemove(ns))
	} else {
		for _, bin := range r.iptablesBins() {
			errs = append(errs, iptablesRemove(ctx, bin))
		}
	}
	routeRemove(ctx)
	return errors.Join(errs...)
}

// iptablesBins are the variant's commands for both families; ip6tables is
// skipped when missing (capture then runs without IPv6 too).
func (r *returnPath) iptablesBins() []string {
	variant := strings.TrimPrefix(r.backend, "iptables-")
	var out []string
	for _, base := range []string{"iptables", "ip6tables"} {
		if p, err := exec.LookPath(base + "-" + variant); err == nil {
			out = append(out, p)
		} else if p, err := exec.LookPath(base); err == nil {
			out = append(out, p)
		}
	}
	return out
}

func (r *returnPath) iptablesInstall(ctx context.Context, bin string) error {
	proxy, ret := fmt.Sprintf("%#x", r.proxyMark), fmt.Sprintf("%#x", ReturnMark)
	for _, args := range [][]string{
		{"-N", retChainPre},
		{"-A", retChainPre, "-m", "mark", "--mark", proxy, "-j", "CONNMARK", "--set-mark", ret},
		{"-N", retChainOut},
		{"-A", retChainOut, "-m", "connmark", "--mark", ret, "-j", "CONNMARK", "--restore-mark"},
		{"-I", "PREROUTING", "1", "-j", retChainPre},
		{"-I", "OUTPUT", "1", "-j", retChainOut},
	} {
		if _, err := execOut(ctx, bin, append([]string{"-w", "-t", "mangle"}, args...)...); err != nil {
			return err
		}
	}
	return nil
}

// iptablesRemove deletes the jumps (every copy) and the chains; errors
// mean "not there".
func iptablesRemove(ctx context.Context, bin string) error {
	for _, j := range [][2]string{{"PREROUTING", retChainPre}, {"OUTPUT", retChainOut}} {
		for range 16 { // bounded: one copy per pass
			if _, err := execOut(ctx, bin, "-w", "-t", "mangle", "-D", j[0], "-j", j[1]); err != nil {
				break
			}
		}
	}
	for _, c := range []string{retChainPre, retChainOut} {
		_, _ = execOut(ctx, bin, "-w", "-t", "mangle", "-F", c)
		_, _ = execOut(ctx, bin, "-w", "-t", "mangle", "-X", c)
	}
	if out, err := execOut(ctx, bin, "-w", "-t", "mangle", "-S"); err == nil && strings.Contains(out, "MESHLET-INPOD") {
		return fmt.Errorf("%s: return path chains left behind", bin)
	}
	return nil
}

var retTable = &nftables.Table{Family: nftables.TableFamilyINet, Name: retNFTable}

func nftConnIn(ns *os.File) (*nftables.Conn, error) {
	c, err := nftables.New(nftables.WithNetNSFd(int(ns.Fd())))
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return c, nil
}

func (r *returnPath) nftInstall(ns *os.File) error {
	c, err := nftConnIn(ns)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	accept := nftables.ChainPolicyAccept
	t := c.AddTable(retTable)
	pre := c.AddChain(&nftables.Chain{Name: "prerouting", Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: &accept})
	// A route chain: a mark set here re-routes the packet.
	out := c.AddChain(&nftables.Chain{Name: "output", Table: t, Type: nftables.ChainTypeRoute,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityMangle, Policy: &accept})
	eq := func(v uint32) *expr.Cmp {
		return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(v)}
	}
	// meta mark == proxy mark: ct mark set return mark
	c.AddRule(&nftables.Rule{Table: t, Chain: pre, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1}, eq(r.proxyMark),
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(ReturnMark)},
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true},
	}})
	// ct mark == return mark: meta mark set ct mark
	c.AddRule(&nftables.Rule{Table: t, Chain: out, Exprs: []expr.Any{
		&expr.Ct{Key: expr.CtKeyMARK, Register: 1}, eq(ReturnMark),
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nftables: table %s: %w", retNFTable, err)
	}
	return nil
}

func nftRemove(ns *os.File) error {
	c, err := nftConnIn(ns)
	if err != nil {
		return err
	}
	defer c.CloseLasting()
	// Add-then-delete: the delete succeeds whether or not the table exists.
	c.AddTable(retTable)
	c.DelTable(retTable)
	if err := c.Flush(); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("nftables: delete table %s: %w", retNFTable, err)
	}
	return nil
}

// routeInstall adds the policy rule and local route for ReturnMark, for
// IPv4 and, when the pod has it, IPv6 (in the calling thread's netns).
func routeInstall(ctx context.Context) error {
	table := strconv.Itoa(ReturnTable)
	mark := fmt.Sprintf("%#x", ReturnMark)
	for _, f := range []struct{ flag, dst string }{{"-4", "0.0.0.0/0"}, {"-6", "::/0"}} {
		if _, err := execOut(ctx, "ip", f.flag, "rule", "add", "fwmark", mark, "lookup", table); err != nil {
			if f.flag == "-6" && ipv6Off() {
				continue
			}
			return err
		}
		if _, err := execOut(ctx, "ip", f.flag, "route", "replace", "local", f.dst, "dev", "lo", "table", table); err != nil {
			return err
		}
	}
	return nil
}

func routeRemove(ctx context.Context) {
	table := strconv.Itoa(ReturnTable)
	mark := fmt.Sprintf("%#x", ReturnMark)
	for _, f := range []string{"-4", "-6"} {
		for range 16 { // bounded: one copy per pass
			if _, err := execOut(ctx, "ip", f, "rule", "del", "fwmark", mark, "lookup", table); err != nil {
				break
			}
		}
		_, _ = execOut(ctx, "ip", f, "route", "flush", "table", table)
	}
}

// ipv6Off reports whether IPv6 is disabled in the calling thread's netns.
func ipv6Off() bool {
	b, err := os.ReadFile("/proc/sys/net/ipv6/conf/all/disable_ipv6")
	return err != nil || strings.TrimSpace(string(b)) == "1"
}

// execOut runs a command (in the calling thread's netns) and returns its
// stdout; errors carry the command line and its stderr.
func execOut(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}
