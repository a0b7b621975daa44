package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"strings"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

// maxNamesPerHost bounds the auto_sni endpoints kept per host: the name
// comes from the request's Host header, which clients choose, so without a
// bound every distinct Host would leave pools behind.
const maxNamesPerHost = 64

// EndpointFor returns the endpoint of h whose connections are made for the
// auto_sni name (state.AutoSNI): connections with different server names
// must not be shared, so each name gets its own pools. An empty name, a
// cluster without auto_sni/auto_san_validation, or a host dialed without
// TLS (the name changes nothing there) gives Endpoint(h).
func (c *Cluster) EndpointFor(h *lb.Host, name string) *Endpoint {
	if name == "" || !c.spec.Load().AutoSNI.Enabled() || c.transport.Load().forHost(h) == nil {
		return c.Endpoint(h)
	}
	c.mu.Lock()
	e := c.named[h][name]
	if e != nil {
		c.mu.Unlock()
		return e
	}
	e = &Endpoint{Host: h, Cluster: c, Name: name}
	var evicted *Endpoint
	if !c.closed {
		if c.named == nil {
			c.named = map[*lb.Host]map[string]*Endpoint{}
		}
		m := c.named[h]
		if m == nil {
			m = map[string]*Endpoint{}
			c.named[h] = m
		}
		if len(m) >= maxNamesPerHost {
			for k, old := range m { // any one: map order is random
				evicted = old
				delete(m, k)
				break
			}
		}
		m[name] = e
	}
	c.mu.Unlock()
	if evicted != nil {
		evicted.close() // in-flight requests finish, idle connections go
	}
	return e
}

// Dial opens a connection for e's pools: to its host, with its auto_sni
// name applied.
func (e *Endpoint) Dial(ctx context.Context, alpn ...string) (net.Conn, error) {
	e.Cluster.sawTraffic()
	return e.Cluster.dialNamed(ctx, e.Host, e.Name, alpn...)
}

// AutoSNIName is the name a request gets under a: the override header's
// value when the request has one, else host (the request's authority after
// host rewriting); the port is dropped and an IP address gives "" (no SNI,
// no name check), as in Envoy. header looks up a request header by its
// lower-case name.
func AutoSNIName(a state.AutoSNI, host string, header func(string) (string, bool)) string {
	if !a.Enabled() {
		return ""
	}
	if a.Header != "" {
		if v, ok := header(a.Header); ok && v != "" {
			host = v
		}
	}
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		name = host[1 : len(host)-1]
	}
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == "" || net.ParseIP(name) != nil {
		return ""
	}
	return name
}

// applyAutoSNI sets name as the server name (auto_sni, overriding the
// context's sni) and adds the DNS SAN check (auto_san_validation) after
// the configured verification. Without verification (no validation
// context) nothing is checked, as in Envoy.
func applyAutoSNI(cfg *tls.Config, a state.AutoSNI, name string) {
	if a.SNI {
		cfg.ServerName = name
	}
	if a.SANValidation && cfg.VerifyConnection != nil {
		verify := cfg.VerifyConnection
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			if err := verify(cs); err != nil {
				return err
			}
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("auto_san_validation: no server certificate to check %q against", name)
			}
			return matchDNSName(cs.PeerCertificates[0], name)
		}
	}
}

// matchDNSName checks that one of leaf's DNS SANs is name, a leading
// wildcard label in the SAN standing for exactly one label (Envoy's
// dnsNameMatch).
func matchDNSName(leaf *x509.Certificate, name string) error {
	for _, san := range leaf.DNSNames {
		san = strings.TrimSuffix(strings.ToLower(san), ".")
		if san == name {
			return nil
		}
		if rest, ok := strings.CutPrefix(san, "*."); ok {
			if label, tail, ok := strings.Cut(name, "."); ok && label != "" && tail == rest {
				return nil
			}
		}
	}
	return fmt.Errorf("auto_san_validation: server certificate DNS SANs %v do not match %q", leaf.DNSNames, name)
}
