package dataplane

import (
	"net/netip"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestChainMatch(t *testing.T) {
	pfx := func(ss ...string) []netip.Prefix {
		var out []netip.Prefix
		for _, s := range ss {
			out = append(out, netip.MustParsePrefix(s))
		}
		return out
	}
	chain := func(name string, m state.FilterChainMatch) *state.FilterChain {
		return &state.FilterChain{Name: name, Match: m, TCPProxy: &state.TCPProxy{Cluster: "c"}}
	}
	// A listener shaped like Istio's inbound/outbound ones: several chains
	// that differ in one criterion each.
	chains := []*state.FilterChain{
		chain("port8080", state.FilterChainMatch{DestinationPort: 8080}),
		chain("port8080-tls", state.FilterChainMatch{DestinationPort: 8080, TransportProtocol: "tls"}),
		chain("net10", state.FilterChainMatch{PrefixRanges: pfx("10.0.0.0/8")}),
		chain("net10.1", state.FilterChainMatch{PrefixRanges: pfx("10.1.0.0/16", "192.168.0.0/16")}),
		chain("exact-sni", state.FilterChainMatch{PrefixRanges: pfx("172.16.0.0/12"), ServerNames: []string{"WWW.Example.com"}}),
		chain("wild-sni", state.FilterChainMatch{PrefixRanges: pfx("172.16.0.0/12"), ServerNames: []string{"*.example.com"}}),
		chain("wild-sni-long", state.FilterChainMatch{PrefixRanges: pfx("172.16.0.0/12"), ServerNames: []string{"*.b.example.com"}}),
		chain("any-sni", state.FilterChainMatch{PrefixRanges: pfx("172.16.0.0/12")}),
		chain("alpn-h2", state.FilterChainMatch{DestinationPort: 9090, ApplicationProtocols: []string{"h2"}}),
		chain("alpn-h1", state.FilterChainMatch{DestinationPort: 9090, ApplicationProtocols: []string{"http/1.1", "http/1.0"}}),
		chain("local-src", state.FilterChainMatch{DestinationPort: 7070, SourceType: state.SourceSameIPOrLoopback}),
		chain("external-src", state.FilterChainMatch{DestinationPort: 7070, SourceType: state.SourceExternal, SourcePrefixRanges: pfx("8.8.0.0/16")}),
		chain("src-port", state.FilterChainMatch{DestinationPort: 6060, SourcePorts: []uint32{1234, 5678}}),
		chain("src-net", state.FilterChainMatch{DestinationPort: 6060, SourcePrefixRanges: pfx("1.2.3.0/24")}),
		chain("dead-end", state.FilterChainMatch{DestinationPort: 5050, ServerNames: []string{"only.example.com"}}),
		chain("v6", state.FilterChainMatch{PrefixRanges: pfx("fd00::/8")}),
	}
	def := chain("default", state.FilterChainMatch{})
	cfg, err := compileListener(&state.Listener{Name: "l", Address: loopback0(), FilterChains: chains, DefaultFilterChain: def})
	if err != nil {
		t.Fatal(err)
	}
	noDefault, err := compileListener(&state.Listener{Name: "l", Address: loopback0(), FilterChains: chains})
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.MustParseAddrPort
	tests := []struct {
		name      string
		dst, src  string
		sni       string
		transport string
		alpn      []string
		want      string // "" = no chain
		noDefault bool
	}{
		{name: "exact port", dst: "10.0.0.1:8080", src: "1.1.1.1:1", want: "port8080"},
		{name: "port beats ip: same port, tls", dst: "10.1.2.3:8080", src: "1.1.1.1:1", transport: "tls", want: "port8080-tls"},
		{name: "ip longest prefix", dst: "10.1.2.3:80", src: "1.1.1.1:1", want: "net10.1"},
		{name: "ip second range of chain", dst: "192.168.4.4:80", src: "1.1.1.1:1", want: "net10.1"},
		{name: "ip shorter prefix", dst: "10.9.9.9:80", src: "1.1.1.1:1", want: "net10"},
		{name: "ipv4-mapped destination", dst: "[::ffff:10.9.9.9]:80", src: "1.1.1.1:1", want: "net10"},
		{name: "ipv6 prefix", dst: "[fd00::1]:80", src: "[fd00::2]:1", want: "v6"},
		{name: "exact sni beats wildcard (case-insensitive config)", dst: "172.16.0.1:443", src: "1.1.1.1:1", sni: "www.example.com", transport: "tls", want: "exact-sni"},
		{name: "longest wildcard", dst: "172.16.0.1:443", src: "1.1.1.1:1", sni: "a.b.example.com", transport: "tls", want: "wild-sni-long"},
		{name: "shorter wildcard", dst: "172.16.0.1:443", src: "1.1.1.1:1", sni: "api.example.com", transport: "tls", want: "wild-sni"},
		{name: "wildcard needs a label", dst: "172.16.0.1:443", src: "1.1.1.1:1", sni: "example.com", transport: "tls", want: "any-sni"},
		{name: "no sni falls to chain without names", dst: "172.16.0.1:443", src: "1.1.1.1:1", want: "any-sni"},
		{name: "alpn h2", dst: "3.3.3.3:9090", src: "1.1.1.1:1", alpn: []string{"h2", "http/1.1"}, want: "alpn-h2"},
		{name: "alpn client order decides", dst: "3.3.3.3:9090", src: "1.1.1.1:1", alpn: []string{"http/1.1", "h2"}, want: "alpn-h1"},
		{name: "alpn http/1.0 from inspector", dst: "3.3.3.3:9090", src: "1.1.1.1:1", alpn: []string{"http/1.0"}, want: "alpn-h1"},
		{name: "alpn none matches: default", dst: "3.3.3.3:9090", src: "1.1.1.1:1", alpn: []string{"h2c"}, want: "default"},
		{name: "source loopback", dst: "3.3.3.3:7070", src: "127.0.0.1:5", want: "local-src"},
		{name: "source same ip", dst: "3.3.3.3:7070", src: "3.3.3.3:5", want: "local-src"},
		{name: "source external in prefix", dst: "3.3.3.3:7070", src: "8.8.8.8:5", want: "external-src"},
		{name: "source external outside prefix: default", dst: "3.3.3.3:7070", src: "9.9.9.9:5", want: "default"},
		{name: "source ip before source port", dst: "3.3.3.3:6060", src: "1.2.3.4:1234", want: "src-net"},
		{name: "source port", dst: "3.3.3.3:6060", src: "5.5.5.5:5678", want: "src-port"},
		{name: "source port miss: default", dst: "3.3.3.3:6060", src: "5.5.5.5:1", want: "default"},
		{name: "no backtracking to port-less chains", dst: "10.0.0.1:5050", src: "1.1.1.1:1", sni: "other.example.com", want: "default"},
		{name: "nothing matches: default", dst: "4.4.4.4:1", src: "1.1.1.1:1", want: "default"},
		{name: "nothing matches, no default", dst: "4.4.4.4:1", src: "1.1.1.1:1", want: "", noDefault: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			transport := tc.transport
			if transport == "" {
				transport = transportRaw
			}
			f := &connFacts{dst: ap(tc.dst), src: ap(tc.src), sni: tc.sni, transport: transport, alpn: tc.alpn}
			c := cfg
			if tc.noDefault {
				c = noDefault
			}
			got := ""
			if ch := c.find(f); ch != nil {
				got = ch.spec.Name
			}
			if got != tc.want {
				t.Errorf("chain = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNeedsPeek(t *testing.T) {
	tests := []struct {
		m    state.FilterChainMatch
		want bool
	}{
		{state.FilterChainMatch{DestinationPort: 80, SourcePorts: []uint32{1}}, false},
		{state.FilterChainMatch{ServerNames: []string{"a"}}, true},
		{state.FilterChainMatch{TransportProtocol: "raw_buffer"}, true},
		{state.FilterChainMatch{ApplicationProtocols: []string{"h2c"}}, true},
	}
	for _, tc := range tests {
		if got := needsPeek([]*state.FilterChain{{Match: tc.m}}); got != tc.want {
			t.Errorf("needsPeek(%+v) = %v, want %v", tc.m, got, tc.want)
		}
	}
}
