package capture

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// nfTables programs one inet table of our own over netlink: the same rules
// as the iptables plan, for IPv4 and IPv6 at once. Replacing the table is
// one netlink transaction, so a reader never sees half the rules.
type nfTables struct {
	cfg Config

	mu    sync.Mutex
	scope *Scope
}

func newNFTables(cfg Config) (Redirector, error) { return &nfTables{cfg: cfg}, nil }

func (r *nfTables) Name() string { return BackendNFTables }

func (r *nfTables) OriginalDst(c net.Conn) (netip.AddrPort, error) { return OriginalDst(c) }

// conn opens a netlink connection to the scope's namespace (WithNetNSFd
// for a netns) and runs fn with it.
func nftConn(s Scope, fn func(*nftables.Conn) error) error {
	fd, release, err := s.open()
	if err != nil {
		return err
	}
	defer release()
	var opts []nftables.ConnOption
	if fd >= 0 {
		opts = append(opts, nftables.WithNetNSFd(fd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nftables: %w", err)
	}
	defer c.CloseLasting()
	return fn(c)
}

var ourTable = &nftables.Table{Family: nftables.TableFamilyINet, Name: nftTable}

func (r *nfTables) Install(ctx context.Context, s Scope) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	err := nftConn(s, func(c *nftables.Conn) error {
		// Add-then-delete makes the delete succeed whether or not a table
		// (ours, or a crashed run's) exists; the rebuild follows in the
		// same transaction.
		c.AddTable(ourTable)
		c.DelTable(ourTable)
		t := c.AddTable(ourTable)
		r.program(c, t)
		if err := c.Flush(); err != nil {
			return fmt.Errorf("nftables: replace table %s: %w", nftTable, err)
		}
		return nil
	})
	if err == nil {
		// The TPROXY policy route is not nftables; program it with ip(8)
		// in the namespace.
		err = s.Do(func() error {
			for _, v6 := range []bool{false, true} {
				removeTProxyRoute(ctx, r.cfg, v6)
				if r.cfg.Inbound != InboundTProxy || v6 && r.cfg.DisableIPv6 {
					continue
				}
				if err := installTProxyRoute(ctx, r.cfg, v6); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err != nil {
		_ = r.removeIn(context.WithoutCancel(ctx), s)
		return fmt.Errorf("capture nftables in %v: %w", s, err)
	}
	r.scope = &s
	return nil
}

func (r *nfTables) Remove(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.scope == nil {
		return nil
	}
	if err := r.removeIn(ctx, *r.scope); err != nil {
		return fmt.Errorf("capture nftables in %v: remove: %w", *r.scope, err)
	}
	r.scope = nil
	return nil
}

func (r *nfTables) removeIn(ctx context.Context, s Scope) error {
	err := nftConn(s, func(c *nftables.Conn) error {
		c.DelTable(ourTable)
		if err := c.Flush(); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("nftables: delete table %s: %w", nftTable, err)
		}
		return nil
	})
	rerr := s.Do(func() error {
		removeTProxyRoute(ctx, r.cfg, false)
		removeTProxyRoute(ctx, r.cfg, true)
		return nil
	})
	return errors.Join(err, rerr)
}

// program queues the chains and rules of cfg into table t.
func (r *nfTables) program(c *nftables.Conn, t *nftables.Table) {
	cfg := r.cfg
	add := func(ch *nftables.Chain, exprs ...[]expr.Any) {
		var all []expr.Any
		for _, e := range exprs {
			all = append(all, e...)
		}
		c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: all})
	}
	accept := policyAccept()
	if !cfg.DisableOutbound || !cfg.DisableDNS {
		out := c.AddChain(&nftables.Chain{Name: nftChainOut, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest, Policy: accept})
		add(out, metaU32(expr.MetaKeySKUID, cfg.ProxyUID), verdict(expr.VerdictReturn))
		add(out, metaU32(expr.MetaKeySKGID, cfg.ProxyGID), verdict(expr.VerdictReturn))
		add(out, metaU32(expr.MetaKeyMARK, cfg.ProxyMark), verdict(expr.VerdictReturn))
		if !cfg.DisableDNS {
			add(out, l4proto(unix.IPPROTO_UDP), dport(53), redirect(cfg.DNSPort))
			add(out, l4proto(unix.IPPROTO_TCP), synOnly(), dport(53), redirect(cfg.DNSPort))
		}
		if !cfg.DisableOutbound {
			add(out, daddr(netip.MustParsePrefix("127.0.0.0/8")), verdict(expr.VerdictReturn))
			add(out, daddr(netip.MustParsePrefix("::1/128")), verdict(expr.VerdictReturn))
			for _, p := range cfg.OutboundExcludeCIDRs {
				add(out, daddr(p.Masked()), verdict(expr.VerdictReturn))
			}
			for _, pt := range cfg.OutboundExcludePorts {
				add(out, l4proto(unix.IPPROTO_TCP), dport(pt), verdict(expr.VerdictReturn))
			}
			if len(cfg.OutboundIncludeCIDRs) == 0 {
				add(out, v6Filter(cfg), l4proto(unix.IPPROTO_TCP), synOnly(), redirect(cfg.OutboundPort))
			}
			for _, p := range cfg.OutboundIncludeCIDRs {
				if p.Addr().Is6() && cfg.DisableIPv6 {
					continue
				}
				add(out, daddr(p.Masked()), l4proto(unix.IPPROTO_TCP), synOnly(), redirect(cfg.OutboundPort))
			}
		}
	}
	switch cfg.Inbound {
	case InboundRedirect:
		in := c.AddChain(&nftables.Chain{Name: nftChainIn, Table: t, Type: nftables.ChainTypeNAT,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest, Policy: accept})
		add(in, iifname("lo"), verdict(expr.VerdictReturn))
		for _, pt := range cfg.InboundExcludePorts {
			add(in, l4proto(unix.IPPROTO_TCP), dport(pt), verdict(expr.VerdictReturn))
		}
		if len(cfg.InboundIncludePorts) == 0 {
			add(in, v6Filter(cfg), l4proto(unix.IPPROTO_TCP), synOnly(), redirect(cfg.InboundPort))
		}
		for _, pt := range cfg.InboundIncludePorts {
			add(in, v6Filter(cfg), l4proto(unix.IPPROTO_TCP), synOnly(), dport(pt), redirect(cfg.InboundPort))
		}
	case InboundTProxy:
		in := c.AddChain(&nftables.Chain{Name: nftChainTProxy, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityMangle, Policy: accept})
		add(in, iifname("lo"), verdict(expr.VerdictReturn))
		for _, pt := range cfg.InboundExcludePorts {
			add(in, l4proto(unix.IPPROTO_TCP), dport(pt), verdict(expr.VerdictReturn))
		}
		// Packets of connections the proxy already holds: route them
		// locally (the socket must be transparent, see iptables.go).
		add(in, l4proto(unix.IPPROTO_TCP), socketTransparent(), setMark(cfg.TProxyMark), verdict(expr.VerdictReturn))
		ports := []uint16{0}
		if len(cfg.InboundIncludePorts) > 0 {
			ports = cfg.InboundIncludePorts
		}
		for _, v6 := range []bool{false, true} {
			if v6 && cfg.DisableIPv6 {
				continue
			}
			for _, pt := range ports {
				var dp []expr.Any
				if pt != 0 {
					dp = dport(pt)
				}
				add(in, l4proto(unix.IPPROTO_TCP), synOnly(), dp, nfproto(v6), tproxy(v6, cfg.InboundPort),
					setMark(cfg.TProxyMark), verdict(expr.VerdictAccept))
			}
		}
	}
}

func policyAccept() *nftables.ChainPolicy {
	p := nftables.ChainPolicyAccept
	return &p
}

func verdict(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

func cmp(data []byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: data} }

func metaU32(k expr.MetaKey, v uint32) []expr.Any {
	return []expr.Any{&expr.Meta{Key: k, Register: 1}, cmp(binaryutil.NativeEndian.PutUint32(v))}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmp([]byte{p})}
}

func nfproto(v6 bool) []expr.Any {
	p := byte(unix.NFPROTO_IPV4)
	if v6 {
		p = unix.NFPROTO_IPV6
	}
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmp([]byte{p})}
}

// v6Filter restricts a family-independent rule to IPv4 when IPv6 capture
// is off.
func v6Filter(cfg Config) []expr.Any {
	if cfg.DisableIPv6 {
		return nfproto(false)
	}
	return nil
}

// synOnly matches `tcp flags & (syn | ack) == syn`: the first packet of a
// connection. Redirections use it so that a connection conntrack picks up
// mid-stream (it predates the rules) is left alone instead of reset.
// Follows l4proto(tcp).
func synOnly() []expr.Any {
	const syn, ack = 0x02, 0x10
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{syn | ack}, Xor: []byte{0}},
		cmp([]byte{syn}),
	}
}

func dport(p uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		cmp(binaryutil.BigEndian.PutUint16(p)),
	}
}

func iifname(name string) []expr.Any {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}, cmp(b)}
}

// daddr matches the destination address against p (family checked first).
func daddr(p netip.Prefix) []expr.Any {
	v6 := p.Addr().Is6()
	off, n := uint32(16), uint32(4)
	if v6 {
		off, n = 24, 16
	}
	mask := net.CIDRMask(p.Bits(), int(n)*8)
	return append(nfproto(v6),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		cmp(p.Addr().AsSlice()),
	)
}

// redirect NATs to port on the local host (redirect to :port).
func redirect(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: 1, RegisterProtoMax: 1, Flags: unix.NF_NAT_RANGE_PROTO_SPECIFIED},
	}
}

func socketTransparent() []expr.Any {
	return []expr.Any{&expr.Socket{Key: expr.SocketKeyTransparent, Register: 1}, cmp([]byte{1})}
}

func setMark(m uint32) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.NativeEndian.PutUint32(m)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}
}

func tproxy(v6 bool, port uint16) []expr.Any {
	fam := byte(unix.NFPROTO_IPV4)
	if v6 {
		fam = unix.NFPROTO_IPV6
	}
	return []expr.Any{
		&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.TProxy{Family: fam, TableFamily: unix.NFPROTO_INET, RegPort: 1},
	}
}
