package node

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/meshlet/meshlet/state"
)

// deliverHBONE connects an admitted inbound HBONE stream to the local
// workload dst, as ztunnel does: plain TCP to target unless dst has an
// application_tunnel. With one, the connection goes to its port (when
// set) and, for protocol PROXY, starts with a PROXY v2 header naming the
// tunnel's source address, the CONNECT target, and the client's SPIFFE
// ID in TLV 0xD0. That is how a waypoint (or any workload terminating its
// own tunnel) learns the real peer, which the plaintext hop hides.
//
// Plaintext inbound (HandleInboundPlaintext) does not come here: ztunnel
// delivers it unchanged, with no header and to the original port.
func (p *Proxy) deliverHBONE(ctx context.Context, dst *state.Workload, target, src netip.AddrPort, peerID string) (net.Conn, error) {
	at := dst.AppTunnel
	addr := target
	if at != nil && at.Port != 0 {
		addr = netip.AddrPortFrom(target.Addr(), at.Port)
	}
	c, err := p.PodDial(withInboundSource(ctx, src), dst, addr)
	if err != nil || at == nil || at.Protocol != state.AppTunnelPROXY {
		return c, err
	}
	var tlvs []ppTLV
	if peerID != "" {
		tlvs = append(tlvs, ppTLV{Type: ppTLVPeerIdentity, Value: []byte(peerID)})
	}
	hdr, err := appendPROXYv2(nil, src, target, tlvs...)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("application tunnel to %s: %w", addr, err)
	}
	// The header is the first write on a fresh connection, so it fits in
	// the socket buffer; the deadline only guards a PodDial that returns
	// something slower.
	deadline := time.Now().Add(p.ConnectTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	_ = c.SetWriteDeadline(deadline)
	if _, err := c.Write(hdr); err != nil {
		c.Close()
		return nil, fmt.Errorf("application tunnel to %s: writing PROXY header: %w", addr, err)
	}
	_ = c.SetWriteDeadline(time.Time{})
	return c, nil
}
