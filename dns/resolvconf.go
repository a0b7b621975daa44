package dns

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// DefaultResolvConf is where the upstreams and search domains come from.
const DefaultResolvConf = "/etc/resolv.conf"

// ResolvConf is what the proxy uses from a resolv.conf.
type ResolvConf struct {
	// Servers are the nameservers as host:port (port 53).
	Servers []string
	// Search are the search domains, in order.
	Search []string
}

// ReadResolvConf parses the file at path.
func ReadResolvConf(path string) (ResolvConf, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return ResolvConf{}, fmt.Errorf("resolv.conf: %w", err)
	}
	return ParseResolvConf(b), nil
}

// ParseResolvConf reads nameserver, search and domain lines (the last
// search or domain line wins, as in glibc); everything else is ignored.
// Nameservers that are not addresses are skipped; an address with a port
// is accepted as an extension.
func ParseResolvConf(b []byte) ResolvConf {
	var rc ResolvConf
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			// Not in glibc's syntax: "IP:PORT" or "[IPv6]:PORT" names an
			// upstream on another port (tests, local resolvers).
			if ap, err := netip.ParseAddrPort(f[1]); err == nil {
				rc.Servers = append(rc.Servers, ap.String())
				continue
			}
			// A scoped IPv6 address ("fe80::1%eth0") is kept as is.
			host, _, _ := strings.Cut(f[1], "%")
			if _, err := netip.ParseAddr(host); err != nil {
				continue
			}
			rc.Servers = append(rc.Servers, net.JoinHostPort(f[1], "53"))
		case "search":
			rc.Search = append([]string(nil), f[1:]...)
		case "domain":
			rc.Search = []string{f[1]}
		}
	}
	return rc
}
