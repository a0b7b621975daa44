package whitebox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/meshlet/meshlet/state"
)

// ErrUnknownDestination means a destination name is neither in the mesh
// config nor in DNS.
var ErrUnknownDestination = errors.New("unknown destination")

// LookupFunc resolves a host name to addresses (net.Resolver.LookupNetIP
// with network "ip").
type LookupFunc func(ctx context.Context, host string) ([]netip.Addr, error)

// resolver turns the host:port a client names into the address a captured
// connection would have had as its original destination.
type resolver struct {
	store  *state.Store
	lookup LookupFunc
}

func defaultLookup(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// resolve finds dst for host:port. An IP literal is used as is. A name is
// looked up in the mesh config first: a listener for the port whose HTTP
// route config has a virtual host with a domain naming host (not the "*"
// catch-all, which would swallow every name), or whose tcp_proxy targets a
// cluster named host (or Istio's "outbound|PORT|SUBSET|HOST"). The
// address is then the chain's single-IP destination prefix (a service VIP)
// or the listener's own address. A wildcard listener's address is kept
// as is (0.0.0.0:PORT, which the data plane's dispatch maps to that
// listener): asking DNS for a mesh name would put a resolver round trip,
// and its 5 s retry when a UDP query is lost, on every request, for an
// answer the routes do not use. Names the mesh does not know go to DNS.
func (r *resolver) resolve(ctx context.Context, host string, port uint16) (netip.AddrPort, error) {
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if ip, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), port), nil
	}
	if host == "" {
		return netip.AddrPort{}, fmt.Errorf("%w: empty host", ErrUnknownDestination)
	}
	if a, ok := meshAddr(r.store.Load(), host, port); ok {
		return netip.AddrPortFrom(a, port), nil
	}
	ip, err := r.dns(ctx, host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w %s: not in the mesh config; DNS: %v", ErrUnknownDestination,
			net.JoinHostPort(host, strconv.Itoa(int(port))), err)
	}
	return netip.AddrPortFrom(ip, port), nil
}

// dns returns the first address for host, IPv4 preferred (loopback-only
// sandboxes rarely route IPv6).
func (r *resolver) dns(ctx context.Context, host string) (netip.Addr, error) {
	ips, err := r.lookup(ctx, host)
	if err != nil {
		return netip.Addr{}, err
	}
	if len(ips) == 0 {
		return netip.Addr{}, errors.New("no addresses")
	}
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			return ip.Unmap(), nil
		}
	}
	return ips[0], nil
}

// meshAddr searches snap's listeners (in name order, so the answer is
// stable) for one that serves host on port.
func meshAddr(snap *state.Snapshot, host string, port uint16) (netip.Addr, bool) {
	if snap == nil {
		return netip.Addr{}, false
	}
	names := make([]string, 0, len(snap.Listeners))
	for name, l := range snap.Listeners {
		if l.Address.Port() == port {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	var wildcard netip.Addr
	for _, name := range names {
		l := snap.Listeners[name]
		chains := l.FilterChains
		if l.DefaultFilterChain != nil {
			chains = append(slices.Clip(chains), l.DefaultFilterChain)
		}
		for _, fc := range chains {
			if p := fc.Match.DestinationPort; p != 0 && p != uint32(port) {
				continue
			}
			if !chainServes(snap, fc, host, port) {
				continue
			}
			for _, pr := range fc.Match.PrefixRanges {
				if pr.IsSingleIP() {
					return pr.Addr().Unmap(), true
				}
			}
			a := l.Address.Addr().Unmap()
			if !a.IsUnspecified() {
				return a, true
			}
			if !wildcard.IsValid() {
				wildcard = a
			}
		}
	}
	// A specific address (a VIP listener) beats a wildcard one found first.
	return wildcard, wildcard.IsValid()
}

// chainServes reports whether fc names host: a virtual host domain of its
// route config, or its tcp_proxy cluster.
func chainServes(snap *state.Snapshot, fc *state.FilterChain, host string, port uint16) bool {
	if tp := fc.TCPProxy; tp != nil {
		if clusterNames(tp.Cluster, host, port) {
			return true
		}
		for _, wc := range tp.WeightedClusters {
			if clusterNames(wc.Name, host, port) {
				return true
			}
		}
		return false
	}
	if fc.HTTP == nil {
		return false
	}
	rc := fc.HTTP.RouteConfig
	if rc == nil {
		rc = snap.Routes[fc.HTTP.RDSName]
	}
	if rc == nil {
		return false
	}
	withPort := host + ":" + strconv.Itoa(int(port))
	for _, vh := range rc.VirtualHosts {
		for _, d := range vh.Domains {
			if d != "*" && (domainMatches(d, host) || domainMatches(d, withPort)) {
				return true
			}
		}
	}
	return false
}

// clusterNames reports whether cluster name c stands for host: equal, or
// Istio's "outbound|PORT|SUBSET|HOST" for this port.
func clusterNames(c, host string, port uint16) bool {
	if strings.EqualFold(c, host) {
		return true
	}
	parts := strings.Split(c, "|")
	return len(parts) == 4 && parts[0] == "outbound" && parts[1] == strconv.Itoa(int(port)) &&
		strings.EqualFold(parts[3], host)
}

// domainMatches is Envoy's virtual host domain match: exact, "*.suffix" or
// "prefix.*" (domains are stored lower-case).
func domainMatches(d, h string) bool {
	switch {
	case strings.HasPrefix(d, "*"):
		return len(h) > len(d)-1 && strings.HasSuffix(h, d[1:])
	case strings.HasSuffix(d, "*"):
		return len(h) > len(d)-1 && strings.HasPrefix(h, d[:len(d)-1])
	}
	return d == h
}
