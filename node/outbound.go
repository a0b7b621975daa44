package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/meshlet/meshlet/hbone"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/state"
)

// HandleOutbound proxies one captured connection from the local workload
// src to origDst (its original destination) and returns when both
// directions are done. It always closes conn. The error reports why the
// connection could not be set up (resolve, identity, dial); errors after
// that end the copy silently, as a reset would.
//
// ctx bounds the whole connection: cancelling it closes both sides.
func (p *Proxy) HandleOutbound(ctx context.Context, conn net.Conn, src *state.Workload, origDst netip.AddrPort) error {
	p.init()
	if !p.track(conn) {
		conn.Close()
		return ErrClosed
	}
	defer p.untrack(conn)
	defer conn.Close()
	p.stats.Outbound.Add(1)

	up, err := p.Resolve(src, origDst)
	if err != nil {
		p.stats.OutboundFailed.Add(1)
		return fmt.Errorf("outbound to %s: %w", origDst, err)
	}
	dctx, cancel := context.WithTimeout(ctx, p.ConnectTimeout)
	upConn, err := p.DialUpstream(dctx, src, up)
	cancel()
	if err != nil {
		p.stats.OutboundFailed.Add(1)
		return fmt.Errorf("outbound to %s: %w", origDst, err)
	}
	if !p.track(upConn) {
		upConn.Close()
		return ErrClosed
	}
	defer p.untrack(upConn)
	pipe(ctx, conn, upConn, p.IdleTimeout)
	return nil
}

// DialUpstream connects to up on behalf of src: over HBONE presenting
// src's identity when up.Tunnel, directly otherwise.
func (p *Proxy) DialUpstream(ctx context.Context, src *state.Workload, up *Upstream) (net.Conn, error) {
	p.init()
	if up.Host != "" {
		return p.dialHost(ctx, src, up)
	}
	if !up.Tunnel {
		c, err := p.Dial(ctx, src, up.Addr)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", up.Addr, err)
		}
		return c, nil
	}
	if src == nil {
		return nil, fmt.Errorf("hbone to %s: %w: source is not a known workload", up.Addr, ErrNoIdentity)
	}
	meta := hbone.Meta{}
	if len(src.Addresses) > 0 {
		meta.ForwardedFor = src.Addresses[0]
	}
	key := hbone.Key{Src: src.Identity(), Dst: up.Identity, Addr: up.TunnelAddr.String(), Profile: poolPartition(src.UID)}
	c, err := p.HBONE.Dial(ctx, key, up.Addr.String(), meta)
	if err != nil {
		return nil, fmt.Errorf("hbone %s via %s: %w", up.Addr, up.TunnelAddr, err)
	}
	return c, nil
}

// hboneSource is the hbone.Client.SourceFor hook: the certificate of the
// workload a tunnel is opened for.
func (p *Proxy) hboneSource(id string) (identity.Source, error) {
	wid, err := parseWorkloadID(id)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.ConnectTimeout)
	defer cancel()
	return p.Identities.Source(ctx, wid)
}

func directDial(ctx context.Context, _ *state.Workload, addr netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr.String())
}

// dialHost resolves a hostname-only endpoint and dials its addresses in
// turn until one answers.
func (p *Proxy) dialHost(ctx context.Context, src *state.Workload, up *Upstream) (net.Conn, error) {
	addrs, err := p.LookupHost(ctx, up.Host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", up.Host, err)
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolve %s: %w: no address", up.Host, ErrNoRoute)
	}
	var errs []error
	for _, a := range addrs {
		addr := netip.AddrPortFrom(a.Unmap(), up.Port)
		c, err := p.Dial(ctx, src, addr)
		if err == nil {
			return c, nil
		}
		errs = append(errs, fmt.Errorf("dial %s: %w", addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("%s: %w", up.Host, errors.Join(errs...))
}
