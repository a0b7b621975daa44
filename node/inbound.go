package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/meshlet/meshlet/hbone"
	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// Inbound is the Dial hook of an hbone.Server on 15008: it admits a
// CONNECT to a workload of this node that the workload's Authorization
// policies allow for the peer, and connects to the pod in plaintext (with
// a PROXY header when its application_tunnel asks, apptunnel.go).
// Refusals wrap hbone.ErrTargetDenied (the client gets 403).
func (p *Proxy) Inbound(ctx context.Context, r *hbone.Request) (net.Conn, error) {
	p.init()
	p.stats.Inbound.Add(1)
	src, _ := netip.ParseAddrPort(r.RemoteAddr)
	dst, l7, err := p.admit(r.Target, r.Peer.ID, src, true)
	if err != nil {
		p.stats.InboundDenied.Add(1)
		return nil, err
	}
	if l7 {
		return p.inboundHTTP(ctx, dst, r.Target, r.Peer.ID, src)
	}
	c, err := p.deliverHBONE(ctx, dst, r.Target, src, r.Peer.ID)
	if err != nil {
		return nil, fmt.Errorf("inbound to %s (%s): %w", r.Target, dst.UID, err)
	}
	return c, nil
}

// InboundHandler returns Inbound as a value for hbone.Server.Dial.
func (p *Proxy) InboundHandler() func(ctx context.Context, r *hbone.Request) (net.Conn, error) {
	return p.Inbound
}

// InboundServer returns an HBONE server presenting the identity of the
// local workload w and delivering through Inbound to w only (a CONNECT
// for another address is refused with 403). In-pod mode runs one per pod,
// inside the pod's network namespace, so each server presents its pod's
// certificate as ztunnel does. The caller serves and closes it.
func (p *Proxy) InboundServer(ctx context.Context, w *state.Workload) (*hbone.Server, error) {
	p.init()
	id, err := parseWorkloadID(w.Identity())
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", w.UID, err)
	}
	src, err := p.Identities.Source(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", w.UID, err)
	}
	uid := w.UID
	dial := func(ctx context.Context, r *hbone.Request) (net.Conn, error) {
		// A pod's server delivers to that pod only, as ztunnel requires
		// the CONNECT target to be the address the tunnel was opened to.
		t := p.Store.Load().Ambient.WorkloadByAddr(p.Network, r.Target.Addr().Unmap())
		if t == nil || t.UID != uid {
			p.stats.Inbound.Add(1)
			p.stats.InboundDenied.Add(1)
			return nil, fmt.Errorf("inbound to %s via the server of %s: %w: %w", r.Target, uid, ErrNotLocal, hbone.ErrTargetDenied)
		}
		return p.Inbound(ctx, r)
	}
	return &hbone.Server{Source: src, Dial: dial, Log: p.Log}, nil
}

// HandleInboundPlaintext proxies a plaintext connection captured on its
// way into the local workload dst (15006 in in-pod mode: a client outside
// the mesh). Authorization is evaluated with no peer identity, so
// policies requiring one deny it. It always closes conn.
func (p *Proxy) HandleInboundPlaintext(ctx context.Context, conn net.Conn, origDst netip.AddrPort) error {
	p.init()
	if !p.track(conn) {
		conn.Close()
		return ErrClosed
	}
	defer p.untrack(conn)
	defer conn.Close()
	p.stats.Inbound.Add(1)
	src, _ := netip.ParseAddrPort(conn.RemoteAddr().String())
	dst, l7, err := p.admit(origDst, "", src, false)
	if err != nil {
		p.stats.InboundDenied.Add(1)
		return fmt.Errorf("inbound plaintext: %w", err)
	}
	if l7 {
		p.stats.InboundHTTP.Add(1)
		lc := &l7Conn{p: p, dst: dst, target: netip.AddrPortFrom(origDst.Addr().Unmap(), origDst.Port()), src: src}
		lc.serveHTTP(ctx, conn, nil)
		return nil
	}
	dctx, cancel := context.WithTimeout(withInboundSource(ctx, src), p.ConnectTimeout)
	up, err := p.PodDial(dctx, dst, origDst)
	cancel()
	if err != nil {
		return fmt.Errorf("inbound plaintext to %s: %w", origDst, err)
	}
	if !p.track(up) {
		up.Close()
		return ErrClosed
	}
	defer p.untrack(up)
	pipe(ctx, conn, up, p.IdleTimeout)
	return nil
}

// admit finds the local workload at target and evaluates its policies.
// l7 is true when the decision depends on the HTTP request: the caller
// serves HTTP and authorizes each request. overHBONE enables waypoint
// enforcement (peerID is then the authenticated tunnel client).
func (p *Proxy) admit(target netip.AddrPort, peerID string, src netip.AddrPort, overHBONE bool) (dst *state.Workload, l7 bool, _ error) {
	target = netip.AddrPortFrom(target.Addr().Unmap(), target.Port())
	amb := p.Store.Load().Ambient
	dst = amb.WorkloadByAddr(p.Network, target.Addr())
	if dst == nil || (p.NodeName != "" && dst.Node != p.NodeName) {
		return nil, false, fmt.Errorf("inbound to %s: %w: %w", target, ErrNotLocal, hbone.ErrTargetDenied)
	}
	if overHBONE && dst.Waypoint != nil && !dst.AllowWaypointBypass && !fromWaypoint(amb, dst.Waypoint, peerID) {
		return nil, false, fmt.Errorf("inbound %s -> %s (%s): %w: %w", peerOr(peerID), target, dst.UID, ErrBypassedWaypoint, hbone.ErrTargetDenied)
	}
	d := policy.EvalAuthz(amb.PoliciesFor(dst), policy.AuthzConn{
		SrcIdentity: peerID,
		Src:         netip.AddrPortFrom(src.Addr().Unmap(), src.Port()),
		Dst:         target,
	})
	if d.NeedsHTTP {
		return dst, true, nil
	}
	if !d.Allowed {
		why := "no ALLOW policy matched"
		if d.Policy != nil {
			why = "policy " + d.Policy.Key()
		}
		return nil, false, fmt.Errorf("inbound %s -> %s (%s): %w (%s): %w", peerOr(peerID), target, dst.UID, ErrDenied, why, hbone.ErrTargetDenied)
	}
	return dst, false, nil
}

func peerOr(id string) string {
	if id == "" {
		return "plaintext peer"
	}
	return id
}

// IsDenied reports whether err is a policy or locality refusal (as
// opposed to a failure to connect).
func IsDenied(err error) bool {
	return errors.Is(err, ErrDenied) || errors.Is(err, ErrNotLocal) || errors.Is(err, ErrBypassedWaypoint)
}

func podDial(ctx context.Context, _ *state.Workload, addr netip.AddrPort) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr.String())
}
