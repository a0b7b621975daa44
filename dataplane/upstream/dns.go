package upstream

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/meshlet/meshlet/state"
)

// resolver is swappable in tests.
var lookupHost = net.DefaultResolver.LookupNetIP

func dnsKeyOf(spec *state.Cluster) string {
	if spec.Type != state.ClusterStrictDNS && spec.Type != state.ClusterLogicalDNS {
		return ""
	}
	key := spec.Type.String() + "|" + spec.DNSLookupFamily
	if spec.LoadAssignment != nil {
		for _, l := range spec.LoadAssignment.Localities {
			for _, e := range l.Endpoints {
				key += "|" + e.Hostname + ":" + strconv.Itoa(int(e.Port))
			}
		}
	}
	return key
}

func (c *Cluster) dnsKey() string { return dnsKeyOf(c.spec.Load()) }

// resolveLoop re-resolves a DNS cluster's hostnames every dns_refresh_rate.
// STRICT_DNS keeps every address; LOGICAL_DNS keeps only the first address
// of each hostname (Envoy's logical host). A failed lookup keeps the last
// good addresses.
func (c *Cluster) resolveLoop(ctx context.Context, spec *state.Cluster) {
	for {
		cla, err := resolve(ctx, spec)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			c.log.Warn("dns resolution failed; keeping last hosts", "err", err)
		} else {
			c.mu.Lock()
			c.resolved = cla
			closed := c.closed
			c.mu.Unlock()
			if !closed {
				c.setHosts(c.spec.Load(), cla)
			}
		}
		refresh := spec.DNSRefreshRate
		if refresh <= 0 {
			refresh = 5 * time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(refresh):
		}
	}
}

func resolve(ctx context.Context, spec *state.Cluster) (*state.ClusterLoadAssignment, error) {
	if spec.LoadAssignment == nil {
		return nil, fmt.Errorf("cluster %q: no load_assignment to resolve", spec.Name)
	}
	out := &state.ClusterLoadAssignment{
		ClusterName:            spec.LoadAssignment.ClusterName,
		OverprovisioningFactor: spec.LoadAssignment.OverprovisioningFactor,
	}
	network := "ip"
	switch spec.DNSLookupFamily {
	case "v4":
		network = "ip4"
	case "v6":
		network = "ip6"
	}
	var firstErr error
	for _, loc := range spec.LoadAssignment.Localities {
		nl := loc
		nl.Endpoints = nil
		for _, ep := range loc.Endpoints {
			addrs, err := lookupAddrs(ctx, network, ep.Hostname)
			if err != nil {
				if firstErr == nil {
					firstErr = fmt.Errorf("resolve %q: %w", ep.Hostname, err)
				}
				continue
			}
			if spec.Type == state.ClusterLogicalDNS && len(addrs) > 1 {
				addrs = addrs[:1]
			}
			for _, a := range addrs {
				ne := ep
				ne.Address = netip.AddrPortFrom(a.Unmap(), uint16(ep.Port)).String()
				nl.Endpoints = append(nl.Endpoints, ne)
			}
		}
		out.Localities = append(out.Localities, nl)
	}
	if firstErr != nil && countEndpoints(out) == 0 {
		return nil, firstErr
	}
	return out, nil
}

func lookupAddrs(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return lookupHost(ctx, network, host)
}

func countEndpoints(cla *state.ClusterLoadAssignment) int {
	n := 0
	for _, l := range cla.Localities {
		n += len(l.Endpoints)
	}
	return n
}
