package inpod

import (
	"context"
	"net"
	"net/netip"
	"os"

	"github.com/meshlet/meshlet/capture"
)

// Default ports, as ztunnel uses them inside each pod.
const (
	DefaultOutboundPort = 15001
	DefaultInboundPort  = 15006
	DefaultHBONEPort    = 15008
)

// DefaultSocketPath is where ztunnel's in-pod socket lives on a node.
const DefaultSocketPath = "/var/run/ztunnel/ztunnel.sock"

// Ports are the listeners opened in every pod; zero means the default.
type Ports struct {
	Outbound uint16
	Inbound  uint16
	HBONE    uint16
}

func (p Ports) withDefaults() Ports {
	if p.Outbound == 0 {
		p.Outbound = DefaultOutboundPort
	}
	if p.Inbound == 0 {
		p.Inbound = DefaultInboundPort
	}
	if p.HBONE == 0 {
		p.HBONE = DefaultHBONEPort
	}
	return p
}

// own reports whether port is one of the proxy's listeners: a connection
// headed there was not meant for the application and forwarding it would
// loop back into the proxy.
func (p Ports) own(port uint16) bool {
	return port == p.Outbound || port == p.Inbound || port == p.HBONE
}

// WorkloadInfo is what the agent tells about a pod.
type WorkloadInfo struct {
	Name           string
	Namespace      string
	ServiceAccount string
}

// Pod is one workload served in its own network namespace. It is valid
// from the Handler call until the connection it came with ends; its netns
// stays open until every connection of the pod has finished.
type Pod struct {
	UID  string
	Info WorkloadInfo

	netns *os.File
	mark  uint32
	// origSrc: DialFrom binds the client's address (a return path for
	// the pod's replies is in place, ours or the agent's).
	origSrc bool
}

// Netns is the pod's network namespace, for capture or code that must run
// there (Scope.Do).
func (p *Pod) Netns() capture.Scope { return capture.NetNSFd(int(p.netns.Fd())) }

// DialContext connects from inside the pod's network namespace (the
// connection leaves with the pod's address) with the proxy's mark set, so
// the pod's own outbound capture lets it through.
func (p *Pod) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return dialIn(ctx, p.netns, p.mark, netip.Addr{}, network, address)
}

// DialFrom delivers an inbound connection to address, an address of the
// pod, as the client src would: from inside the pod's netns, with the
// proxy's mark, bound to src's IP (IP_TRANSPARENT; any free port), so the
// application sees its real client as it would without the mesh. The
// pod's replies come back to the proxy by the return path (ReturnMark).
// Without original-source delivery (Options.NoOriginalSource), or when
// src is unknown, a loopback address or of the other family, it is
// DialContext: the pod sees its own address.
func (p *Pod) DialFrom(ctx context.Context, src netip.Addr, network, address string) (net.Conn, error) {
	if !p.origSrc || !src.IsValid() {
		return p.DialContext(ctx, network, address)
	}
	src = src.Unmap()
	dst, err := netip.ParseAddrPort(address)
	if err != nil || src.IsLoopback() || src.IsUnspecified() || dst.Addr().Unmap().Is4() != src.Is4() {
		return p.DialContext(ctx, network, address)
	}
	return dialIn(ctx, p.netns, p.mark, src, network, netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port()).String())
}

// OriginalSource reports whether DialFrom delivers from the client's
// address.
func (p *Pod) OriginalSource() bool { return p.origSrc }

func (p *Pod) String() string {
	if p.Info.Name == "" {
		return p.UID
	}
	return p.Info.Namespace + "/" + p.Info.Name
}

// Handler serves the connections accepted in pods. Each call runs on its own
// goroutine, owns c (it must close it) and may block until the connection
// ends; the Server drains running calls when the pod is deleted.
type Handler interface {
	// Outbound: the pod's application dialed dst and was captured.
	Outbound(p *Pod, c *net.TCPConn, dst netip.AddrPort)
	// Inbound: plaintext traffic to the pod, headed for dst (an address of
	// the pod), captured on its way in.
	Inbound(p *Pod, c *net.TCPConn, dst netip.AddrPort)
	// HBONE: a connection to the pod's 15008, an mTLS HTTP/2 CONNECT tunnel
	// from another node proxy.
	HBONE(p *Pod, c *net.TCPConn)
}

// PodRemover is implemented by Handlers that keep per-pod state (an HBONE
// server presenting the pod's identity, say): PodRemoved is called once a
// deleted pod's connections have all ended, before its netns is released.
type PodRemover interface {
	PodRemoved(p *Pod)
}
