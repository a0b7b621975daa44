package node

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshlet/meshlet/hbone"
	"github.com/meshlet/meshlet/state"
)

// Errors callers branch on; the returned errors wrap them with what and
// where.
var (
	// ErrNoRoute: the original destination is neither a known service VIP
	// with that port nor a known workload, or the service has no usable
	// endpoint.
	ErrNoRoute = errors.New("node: no route to destination")
	// ErrNotLocal: an inbound tunnel targets an address that is not a
	// workload of this node.
	ErrNotLocal = errors.New("node: destination is not a local workload")
	// ErrDenied: an Authorization policy refused the connection.
	ErrDenied = errors.New("node: denied by authorization policy")
	// ErrBypassedWaypoint: an inbound tunnel to a workload that has a
	// waypoint came from a peer other than that waypoint.
	ErrBypassedWaypoint = errors.New("node: destination must be reached through its waypoint")
	// ErrClosed: the proxy was closed.
	ErrClosed = errors.New("node: proxy closed")
)

// HBONEPort is the port node proxies accept HBONE on.
const HBONEPort = hbone.DefaultPort

// Proxy is an ambient node proxy. Fields may be set until first use;
// Store, and Identities for HBONE, are required.
type Proxy struct {
	// Store holds the snapshot whose Ambient part is used; each connection
	// reads the snapshot current when it starts.
	Store *state.Store
	// NodeName is the name workloads carry in Workload.Node when they run
	// on this node. Inbound tunnels are accepted only for these. Empty
	// accepts any workload known by address (single-node tests).
	NodeName string
	// Network is this node's network ("" is the default network); address
	// lookups use it.
	Network string
	// Identities supplies per-workload certificates, for the client side
	// of outbound tunnels (the source workload) and for InboundServer.
	Identities Identities
	// HBONE dials outbound tunnels. Default: a client whose SourceFor
	// asks Identities. A caller-supplied client must be able to present
	// any local workload's identity (set its SourceFor).
	HBONE *hbone.Client
	// TunnelAddr returns the HBONE endpoint for a destination workload.
	// Default: its first address on port 15008, where the destination
	// node captures HBONE for its pods (ztunnel's behaviour). Tests on
	// loopback map workloads to per-node ports here.
	TunnelAddr func(dst *state.Workload) (netip.AddrPort, error)
	// Dial opens direct (non-HBONE) outbound connections. src is the
	// workload the connection is made for (in-pod mode dials from its
	// network namespace). Default: net.Dialer.
	Dial func(ctx context.Context, src *state.Workload, addr netip.AddrPort) (net.Conn, error)
	// LookupHost resolves a hostname-only endpoint's name. Default: the
	// system resolver.
	LookupHost func(ctx context.Context, host string) ([]netip.Addr, error)
	// PodDial delivers an inbound tunnel's stream to the local workload
	// dst at addr in plaintext. Default: net.Dialer.
	PodDial func(ctx context.Context, dst *state.Workload, addr netip.AddrPort) (net.Conn, error)
	// ConnectTimeout bounds resolving plus connecting upstream (default
	// 10s).
	ConnectTimeout time.Duration
	// IdleTimeout closes a proxied connection with no traffic in either
	// direction for this long (0: never).
	IdleTimeout time.Duration
	// KeepIdentities disables releasing the certificates of identities no
	// local workload uses any more (see Forgetter).
	KeepIdentities bool
	Log            *slog.Logger

	once          sync.Once
	ownHBONE      bool
	defaultTunnel bool
	rr            roundRobin
	stats         Stats

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// Upstream is where an outbound connection goes.
type Upstream struct {
	// Workload is the destination endpoint (nil for a service reached
	// through its waypoint, or a destination outside the mesh).
	Workload *state.Workload
	// Service is set when the original destination was a service VIP.
	Service *state.Service
	// Waypoint is set when the connection goes through the destination's
	// waypoint: the tunnel ends there and Addr is the original
	// destination, which the waypoint resolves.
	Waypoint *state.Workload
	// Addr is the destination workload's IP and target port: the
	// :authority of the HBONE CONNECT, or the direct dial address.
	Addr netip.AddrPort
	// Host and Port are set instead of Addr for a hostname-only endpoint:
	// the name is resolved when dialing (directly, never over HBONE).
	Host string
	Port uint16
	// Tunnel is true when the connection goes over HBONE.
	Tunnel bool
	// TunnelAddr is the HBONE endpoint (valid when Tunnel).
	TunnelAddr netip.AddrPort
	// Identity is the SPIFFE ID the destination must present over HBONE.
	Identity string
}

// Stats are cumulative counters, safe to read at any time.
type Stats struct {
	Outbound       atomic.Int64 // outbound connections handled
	OutboundFailed atomic.Int64 // outbound connections not set up
	Inbound        atomic.Int64 // inbound streams/connections handled
	InboundDenied  atomic.Int64 // inbound refused (not local, or policy)
	// L7 (connections whose decision needs the HTTP request).
	InboundHTTP    atomic.Int64 // inbound connections served with HTTP
	Requests       atomic.Int64 // requests allowed and forwarded
	RequestsDenied atomic.Int64 // requests answered 403
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() *Stats { return &p.stats }

func (p *Proxy) init() {
	p.once.Do(func() {
		if p.Log == nil {
			p.Log = slog.Default()
		}
		if p.ConnectTimeout <= 0 {
			p.ConnectTimeout = 10 * time.Second
		}
		if p.TunnelAddr == nil {
			p.TunnelAddr = defaultTunnelAddr
			p.defaultTunnel = true
		}
		if p.Dial == nil {
			p.Dial = directDial
		}
		if p.LookupHost == nil {
			p.LookupHost = func(ctx context.Context, host string) ([]netip.Addr, error) {
				return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
			}
		}
		if p.PodDial == nil {
			p.PodDial = podDial
		}
		if p.HBONE == nil {
			p.HBONE = &hbone.Client{SourceFor: p.hboneSource, Log: p.Log}
			p.ownHBONE = true
		}
		p.conns = map[net.Conn]struct{}{}
		p.watchIdentities()
	})
}

// track registers a connection so that Close can end it.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
}

// Close ends every connection the proxy is handling and closes the HBONE
// client it created (not one the caller supplied). Servers returned by
// InboundServer belong to the caller.
func (p *Proxy) Close() error {
	p.init()
	p.mu.Lock()
	p.closed = true
	conns := p.conns
	p.conns = map[net.Conn]struct{}{}
	p.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	if p.ownHBONE {
		return p.HBONE.Close()
	}
	return nil
}

// Workload returns the workload with uid in the current snapshot, or nil.
func (p *Proxy) Workload(uid string) *state.Workload {
	return p.Store.Load().Ambient.Workload(uid)
}

// WorkloadByAddr returns the workload at ip on this node's network, or nil.
func (p *Proxy) WorkloadByAddr(ip netip.Addr) *state.Workload {
	return p.Store.Load().Ambient.WorkloadByAddr(p.Network, ip)
}
