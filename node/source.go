package node

import (
	"context"
	"net/netip"
)

// sourceKey carries an inbound connection's original client address to
// the PodDial hook.
type sourceKey struct{}

// withInboundSource records src, the address the connection to a local
// workload came from: a plaintext client's own address, or the HBONE
// tunnel's transport peer (in ambient the source pod itself, since node
// proxies dial tunnels from the source pod's network namespace).
func withInboundSource(ctx context.Context, src netip.AddrPort) context.Context {
	if !src.IsValid() {
		return ctx
	}
	return context.WithValue(ctx, sourceKey{}, netip.AddrPortFrom(src.Addr().Unmap(), src.Port()))
}

// InboundSource returns the original client address of the inbound
// connection PodDial is called for, when known. A PodDial that can bind a
// foreign address (in-pod mode, IP_TRANSPARENT inside the pod's network
// namespace) delivers from it, so the workload sees its real client as it
// would without the mesh.
func InboundSource(ctx context.Context) (netip.AddrPort, bool) {
	src, ok := ctx.Value(sourceKey{}).(netip.AddrPort)
	return src, ok
}

// poolPartition keeps HBONE connections of different source workloads
// apart, even when they share a service account: a tunnel carries its
// source's address (in-pod mode dials it from the source pod's network
// namespace), which the destination uses for policy and delivers from, so
// reusing one workload's tunnel for another would misattribute its
// traffic. ztunnel's pool key holds the source IP for the same reason.
func poolPartition(src string) string { return "src/" + src }
