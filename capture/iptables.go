package capture

import (
	"fmt"
	"strconv"
)

// ipRule is one iptables rule: -A chain args... in table.
type ipRule struct {
	table, chain string
	args         []string
}

// ipPlan is what one family (iptables or ip6tables) gets: our chains with
// their rules, then the jumps from built-in chains into them (added last so
// traffic never enters a half-built chain).
type ipPlan struct {
	chains []ipRule // table and chain only: created (-N)
	rules  []ipRule
	jumps  []ipRule
}

// iptablesPlan turns cfg into rules for one family.
func iptablesPlan(cfg Config, v6 bool) ipPlan {
	var p ipPlan
	port := func(v uint16) string { return strconv.Itoa(int(v)) }
	if !cfg.DisableOutbound || !cfg.DisableDNS {
		p.chains = append(p.chains, ipRule{table: "nat", chain: chainOutput})
		out := func(args ...string) {
			p.rules = append(p.rules, ipRule{"nat", chainOutput, args})
		}
		// The proxy's own traffic first, so its upstream and DNS
		// connections never loop back into it.
		out("-m", "owner", "--uid-owner", strconv.FormatUint(uint64(cfg.ProxyUID), 10), "-j", "RETURN")
		out("-m", "owner", "--gid-owner", strconv.FormatUint(uint64(cfg.ProxyGID), 10), "-j", "RETURN")
		out("-m", "mark", "--mark", fmt.Sprintf("%#x", cfg.ProxyMark), "-j", "RETURN")
		if !cfg.DisableDNS {
			// Before the loopback exclusion: stub resolvers listen on
			// 127.0.0.53 and the like.
			out("-p", "udp", "--dport", "53", "-j", "REDIRECT", "--to-ports", port(cfg.DNSPort))
			out("-p", "tcp", "--syn", "--dport", "53", "-j", "REDIRECT", "--to-ports", port(cfg.DNSPort))
		}
		if !cfg.DisableOutbound {
			loop := "127.0.0.0/8"
			if v6 {
				loop = "::1/128"
			}
			out("-d", loop, "-j", "RETURN")
			for _, c := range prefixesOf(cfg.OutboundExcludeCIDRs, v6) {
				out("-d", c.String(), "-j", "RETURN")
			}
			for _, pt := range cfg.OutboundExcludePorts {
				out("-p", "tcp", "--dport", port(pt), "-j", "RETURN")
			}
			// Only a SYN starts a redirection (as everywhere below): a
			// connection that existed before capture was installed, which
			// conntrack picks up mid-stream, keeps its addresses instead of
			// being NATed to a listener that has no socket for it (a reset).
			redirect := []string{"-j", "REDIRECT", "--to-ports", port(cfg.OutboundPort)}
			if len(cfg.OutboundIncludeCIDRs) == 0 {
				out(append([]string{"-p", "tcp", "--syn"}, redirect...)...)
			}
			for _, c := range prefixesOf(cfg.OutboundIncludeCIDRs, v6) {
				out(append([]string{"-p", "tcp", "--syn", "-d", c.String()}, redirect...)...)
			}
		}
		p.jumps = append(p.jumps, ipRule{"nat", "OUTPUT", []string{"-j", chainOutput}})
	}

	switch cfg.Inbound {
	case InboundRedirect:
		p.chains = append(p.chains, ipRule{table: "nat", chain: chainInbound})
		in := func(args ...string) {
			p.rules = append(p.rules, ipRule{"nat", chainInbound, args})
		}
		in("-i", "lo", "-j", "RETURN")
		for _, pt := range cfg.InboundExcludePorts {
			in("-p", "tcp", "--dport", port(pt), "-j", "RETURN")
		}
		redirect := []string{"-j", "REDIRECT", "--to-ports", port(cfg.InboundPort)}
		if len(cfg.InboundIncludePorts) == 0 {
			in(append([]string{"-p", "tcp", "--syn"}, redirect...)...)
		}
		for _, pt := range cfg.InboundIncludePorts {
			in(append([]string{"-p", "tcp", "--syn", "--dport", port(pt)}, redirect...)...)
		}
		p.jumps = append(p.jumps, ipRule{"nat", "PREROUTING", []string{"-j", chainInbound}})
	case InboundTProxy:
		p.chains = append(p.chains, ipRule{table: "mangle", chain: chainInbound})
		in := func(args ...string) {
			p.rules = append(p.rules, ipRule{"mangle", chainInbound, args})
		}
		mark := fmt.Sprintf("%#x", cfg.TProxyMark)
		in("-i", "lo", "-j", "RETURN")
		for _, pt := range cfg.InboundExcludePorts {
			in("-p", "tcp", "--dport", port(pt), "-j", "RETURN")
		}
		// Packets of connections the proxy already accepted: mark them so
		// the policy route delivers them locally. --transparent matters:
		// without it a port with a real listener would match here and
		// bypass the proxy.
		in("-p", "tcp", "-m", "socket", "--transparent", "-j", "MARK", "--set-mark", mark)
		in("-m", "mark", "--mark", mark, "-j", "RETURN")
		// Replies to connections this host opened (the proxy's own
		// upstream connections among them): TPROXY would find their
		// non-transparent socket and drop the packet.
		in("-p", "tcp", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN")
		// SYN only: TPROXY would drop a mid-stream packet of a connection
		// that predates capture (its socket is not transparent).
		tproxy := []string{"-j", "TPROXY", "--on-port", port(cfg.InboundPort), "--tproxy-mark", mark + "/0xffffffff"}
		if len(cfg.InboundIncludePorts) == 0 {
			in(append([]string{"-p", "tcp", "--syn"}, tproxy...)...)
		}
		for _, pt := range cfg.InboundIncludePorts {
			in(append([]string{"-p", "tcp", "--syn", "--dport", port(pt)}, tproxy...)...)
		}
		p.jumps = append(p.jumps, ipRule{"mangle", "PREROUTING", []string{"-j", chainInbound}})
	}
	return p
}
