package dataplane

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/meshlet/meshlet/state"
)

// connFacts are the properties of a connection that filter chains match on.
type connFacts struct {
	dst       netip.AddrPort // local address, or the original destination
	src       netip.AddrPort
	sni       string
	transport string
	alpn      []string
}

// chainMatcher selects a filter chain the way Envoy's FilterChainManager
// does: eight steps in a fixed order (destination port, destination IP,
// server name, transport protocol, application protocols, source type, source
// IP, source port). At each step only the chains that match the connection
// most specifically survive; a chain with the field unset matches as the
// least specific value. There is no backtracking: if the most specific group
// of one step has nothing matching at a later step, no chain matches and the
// default chain (if any) serves.
type chainMatcher struct {
	chains []compiledMatch
	// byPort indexes chains by destination_port so the first step is a map
	// lookup; anyPort holds the chains without one. Both keep config order.
	byPort  map[uint32][]int
	anyPort []int
}

type compiledMatch struct {
	dstPrefixes []netip.Prefix
	exactNames  []string // lower-case
	wildNames   []string // lower-case suffixes including the dot: ".example.com"
	anyName     bool     // server_names empty
	transport   string
	alpn        []string
	srcType     state.SourceType
	srcPrefixes []netip.Prefix
	srcPorts    []uint32
}

func newChainMatcher(chains []*state.FilterChain) *chainMatcher {
	m := &chainMatcher{chains: make([]compiledMatch, len(chains)), byPort: map[uint32][]int{}}
	for i, fc := range chains {
		fm := &fc.Match
		c := compiledMatch{
			dstPrefixes: canonPrefixes(fm.PrefixRanges),
			anyName:     len(fm.ServerNames) == 0,
			transport:   fm.TransportProtocol,
			alpn:        fm.ApplicationProtocols,
			srcType:     fm.SourceType,
			srcPrefixes: canonPrefixes(fm.SourcePrefixRanges),
			srcPorts:    fm.SourcePorts,
		}
		for _, n := range fm.ServerNames {
			n = strings.ToLower(n)
			if strings.HasPrefix(n, "*.") {
				c.wildNames = append(c.wildNames, n[1:])
			} else {
				c.exactNames = append(c.exactNames, n)
			}
		}
		m.chains[i] = c
		if fm.DestinationPort != 0 {
			m.byPort[fm.DestinationPort] = append(m.byPort[fm.DestinationPort], i)
		} else {
			m.anyPort = append(m.anyPort, i)
		}
	}
	return m
}

// canonPrefixes unmaps IPv4-mapped prefixes and masks host bits so that
// matching compares like with like.
func canonPrefixes(ps []netip.Prefix) []netip.Prefix {
	if len(ps) == 0 {
		return nil
	}
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		a := p.Addr()
		bits := p.Bits()
		if a.Is4In6() {
			a = a.Unmap()
			bits = max(bits-96, 0)
		}
		out = append(out, netip.PrefixFrom(a, bits).Masked())
	}
	return out
}

// needsPeek reports whether any chain matches on something only the first
// bytes reveal.
func needsPeek(chains []*state.FilterChain) bool {
	for _, fc := range chains {
		fm := &fc.Match
		if len(fm.ServerNames) > 0 || fm.TransportProtocol != "" || len(fm.ApplicationProtocols) > 0 {
			return true
		}
	}
	return false
}

// find returns the index of the selected chain, or -1.
func (m *chainMatcher) find(f *connFacts) int {
	var stack [16]int
	cand := stack[:0]
	if ids, ok := m.byPort[uint32(f.dst.Port())]; ok {
		cand = append(cand, ids...)
	} else {
		cand = append(cand, m.anyPort...)
	}
	dst := f.dst.Addr().Unmap()
	src := f.src.Addr().Unmap()
	steps := [...]func(*compiledMatch) int{
		func(c *compiledMatch) int { return prefixScore(c.dstPrefixes, dst) },
		func(c *compiledMatch) int { return c.nameScore(f.sni) },
		func(c *compiledMatch) int { return stringScore(c.transport, f.transport) },
		func(c *compiledMatch) int { return alpnScore(c.alpn, f.alpn) },
		func(c *compiledMatch) int { return sourceTypeScore(c.srcType, src, dst) },
		func(c *compiledMatch) int { return prefixScore(c.srcPrefixes, src) },
		func(c *compiledMatch) int { return portScore(c.srcPorts, f.src.Port()) },
	}
	for _, score := range steps {
		if len(cand) == 0 {
			return -1
		}
		cand = prune(cand, m.chains, score)
	}
	if len(cand) == 0 {
		return -1
	}
	// Envoy rejects listeners where two chains survive every step; the
	// decoder should too, and config order breaks the tie if it did not.
	return cand[0]
}

// prune keeps the candidates with the highest non-negative score. Scores:
// -1 does not match, 0 matches because the field is unset, higher is more
// specific.
func prune(cand []int, chains []compiledMatch, score func(*compiledMatch) int) []int {
	best := -1
	out := cand[:0]
	for _, i := range cand {
		s := score(&chains[i])
		switch {
		case s < 0 || s < best:
		case s > best:
			best = s
			out = append(out[:0], i)
		default:
			out = append(out, i)
		}
	}
	return out
}

func prefixScore(ps []netip.Prefix, a netip.Addr) int {
	if len(ps) == 0 {
		return 0
	}
	best := -1
	for _, p := range ps {
		if p.Contains(a) && p.Bits()+1 > best {
			best = p.Bits() + 1
		}
	}
	return best
}

// nameScore: exact server name beats any wildcard; a longer wildcard suffix
// beats a shorter one ("*.b.example.com" over "*.example.com"); no
// server_names is the catch-all.
func (c *compiledMatch) nameScore(sni string) int {
	if c.anyName {
		return 0
	}
	if sni == "" {
		return -1
	}
	if slices.Contains(c.exactNames, sni) {
		return 1 << 20
	}
	best := -1
	for _, w := range c.wildNames {
		// The wildcard must cover at least one label: "*.example.com"
		// does not match "example.com".
		if len(sni) > len(w) && strings.HasSuffix(sni, w) && len(w) > best {
			best = len(w)
		}
	}
	return best
}

func stringScore(want, got string) int {
	switch want {
	case "":
		return 0
	case got:
		return 1
	}
	return -1
}

// alpnScore follows Envoy: the connection's protocols are tried in the order
// the client offered them, so a chain matching an earlier one wins.
func alpnScore(want, got []string) int {
	if len(want) == 0 {
		return 0
	}
	for i, p := range got {
		if slices.Contains(want, p) {
			return len(got) - i
		}
	}
	return -1
}

func sourceTypeScore(t state.SourceType, src, dst netip.Addr) int {
	local := src.IsLoopback() || src == dst
	switch t {
	case state.SourceAny:
		return 0
	case state.SourceSameIPOrLoopback:
		if local {
			return 1
		}
	case state.SourceExternal:
		if !local {
			return 1
		}
	}
	return -1
}

func portScore(ports []uint32, p uint16) int {
	if len(ports) == 0 {
		return 0
	}
	if slices.Contains(ports, uint32(p)) {
		return 1
	}
	return -1
}
