package hbone

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/state"
)

// hostnameLocalAddress is tunneling_config.hostname's stand-in for the
// internal connection's local address, which Istio's original_dst listener
// filter sets to the endpoint's address.
const hostnameLocalAddress = "%DOWNSTREAM_LOCAL_ADDRESS%"

// ErrNotTunneled is wrapped by errors of an Istio-shape chain that does not
// resolve (missing listener or cluster, no TLS).
var ErrNotTunneled = errors.New("hbone: tunnel configuration does not resolve")

// dialInternal carries out Istio's HBONE origination shape for one
// connection (see xds/resource/hbone_istio.go for the configuration):
// target is an endpoint of cfg.Cluster; its InternalEndpoint names the
// internal listener, whose tunneling_config and tcp_proxy cluster say how
// to reach the tunnel endpoint.
func (t *ClusterTunnel) dialInternal(ctx context.Context, cfg *state.HBONE, target string) (net.Conn, error) {
	if t.Store == nil {
		return nil, fmt.Errorf("%w: no configuration store for cluster %q", ErrNotTunneled, cfg.Cluster)
	}
	snap := t.Store.Load()
	ep := findEndpoint(snap, cfg.Cluster, target)
	if ep == nil || ep.Internal == nil {
		// A cluster may mix tunneled and direct endpoints (transport
		// socket matches): this one is direct.
		var d net.Dialer
		return d.DialContext(ctx, "tcp", target)
	}
	plan, err := resolveInternal(snap, ep, target)
	if err != nil {
		return nil, fmt.Errorf("cluster %q endpoint %s: %w", cfg.Cluster, target, err)
	}
	src, err := tunnelSource(plan.tls, t.Store, t.Local, t.Client.Source)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: tunnel cluster %q: %w", cfg.Cluster, plan.cluster, err)
	}
	self, err := OwnID(src)
	if err != nil {
		return nil, fmt.Errorf("cluster %q: tunnel cluster %q: %w", cfg.Cluster, plan.cluster, err)
	}
	key := Key{Src: self, Addr: plan.addr, Profile: "cluster/" + plan.cluster}
	p := Profile{Source: src, Verify: sanVerifier(plan.tls.SANMatchers), Headers: plan.headers}
	return t.Client.DialProfile(ctx, key, p, plan.authority, t.meta(ctx))
}

// internalPlan is one resolved Istio-shape tunnel.
type internalPlan struct {
	cluster   string // the tunnel (connect_originate) cluster
	tls       *state.UpstreamTLS
	addr      string // tunnel endpoint ip:port
	authority string // CONNECT :authority
	headers   http.Header
}

func resolveInternal(snap *state.Snapshot, ep *state.Endpoint, target string) (*internalPlan, error) {
	l := snap.Listeners[ep.Internal.Listener]
	if l == nil || l.Internal == nil {
		return nil, fmt.Errorf("%w: internal listener %q not found", ErrNotTunneled, ep.Internal.Listener)
	}
	il := l.Internal
	tc := snap.Clusters[il.Cluster]
	if tc == nil {
		return nil, fmt.Errorf("%w: internal listener %q: cluster %q not found", ErrNotTunneled, l.Name, il.Cluster)
	}
	if tc.TLS == nil {
		return nil, fmt.Errorf("%w: cluster %q has no UpstreamTlsContext; HBONE needs mTLS", ErrNotTunneled, tc.Name)
	}
	dst, err := netip.ParseAddrPort(target)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	// ORIGINAL_DST: the tunnel endpoint is the destination itself (or its
	// waypoint) at the override port.
	addr := dst
	if tc.OriginalDstWaypointKey && ep.Internal.Waypoint != "" {
		w, err := netip.ParseAddrPort(ep.Internal.Waypoint)
		if err != nil {
			ip, perr := netip.ParseAddr(ep.Internal.Waypoint)
			if perr != nil {
				return nil, fmt.Errorf("waypoint %q: %w", ep.Internal.Waypoint, perr)
			}
			w = netip.AddrPortFrom(ip, dst.Port())
		}
		addr = w
	}
	if tc.OriginalDstPortOverride != 0 {
		addr = netip.AddrPortFrom(addr.Addr(), uint16(tc.OriginalDstPortOverride))
	} else if tc.Type != state.ClusterOriginalDst {
		return nil, fmt.Errorf("%w: cluster %q must be ORIGINAL_DST", ErrNotTunneled, tc.Name)
	}
	authority := il.Hostname
	if authority == hostnameLocalAddress {
		authority = dst.String()
	}
	var h http.Header
	if len(il.Headers) > 0 {
		h = make(http.Header, len(il.Headers))
		for _, kv := range il.Headers {
			h.Add(kv.Name, kv.Value)
		}
	}
	return &internalPlan{cluster: tc.Name, tls: tc.TLS, addr: addr.String(), authority: authority, headers: h}, nil
}

// findEndpoint returns the endpoint of cluster whose address is target.
func findEndpoint(snap *state.Snapshot, cluster, target string) *state.Endpoint {
	c := snap.Clusters[cluster]
	if c == nil {
		return nil
	}
	cla := c.LoadAssignment
	if c.Type == state.ClusterEDS {
		cla = snap.Endpoints[c.EDSServiceName]
	}
	if cla == nil {
		return nil
	}
	for i := range cla.Localities {
		eps := cla.Localities[i].Endpoints
		for j := range eps {
			if eps[j].Address == target {
				return &eps[j]
			}
		}
	}
	return nil
}

// tunnelSource is the tunnel cluster's client certificate and roots:
// SDS secrets (from the ADS stream, or the local identity for the names a
// local agent serves) or the static PEM of the UpstreamTlsContext.
func tunnelSource(t *state.UpstreamTLS, store *state.Store, local, fallback identity.Source) (identity.Source, error) {
	if local == nil {
		local = fallback
	}
	if !t.SDS.IsZero() {
		return identity.SourceForSDS(store, t.SDS, local), nil
	}
	if len(t.CertChainPEM) == 0 || len(t.RootCAPEM) == 0 {
		if local != nil {
			return local, nil
		}
		return nil, errors.New("UpstreamTlsContext has neither SDS secrets nor a certificate and trusted_ca")
	}
	cert, err := tls.X509KeyPair(t.CertChainPEM, t.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls_certificates: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(t.RootCAPEM) {
		return nil, errors.New("validation_context: no certificates in trusted_ca")
	}
	return identity.Static{Cert: &cert, Pool: pool}, nil
}

// sanVerifier turns the tunnel cluster's subject-alt-name matchers into a
// peer check; nil when there are none. HBONE peers are identified by
// their SPIFFE URI SAN, so URI (and untyped) matchers compare it; other
// SAN types compare the certificate's names of that type.
func sanVerifier(ms []state.SANMatcher) func(Peer) error {
	if len(ms) == 0 {
		return nil
	}
	return func(p Peer) error {
		for i := range ms {
			for _, name := range sanNames(p, ms[i].Type) {
				if matchString(&ms[i].Match, name) {
					return nil
				}
			}
		}
		return fmt.Errorf("peer %s matches none of the tunnel cluster's subject alt names", p.ID)
	}
}

func sanNames(p Peer, t state.SANType) []string {
	if len(p.Chain) == 0 {
		return []string{p.ID}
	}
	leaf := p.Chain[0]
	var out []string
	if t == state.SANURI || t == state.SANAny {
		for _, u := range leaf.URIs {
			out = append(out, u.String())
		}
	}
	if t == state.SANDNS || t == state.SANAny {
		out = append(out, leaf.DNSNames...)
	}
	if t == state.SANEmail || t == state.SANAny {
		out = append(out, leaf.EmailAddresses...)
	}
	if t == state.SANIP || t == state.SANAny {
		for _, ip := range leaf.IPAddresses {
			out = append(out, ip.String())
		}
	}
	return out
}

func matchString(m *state.StringMatcher, s string) bool {
	v := m.Value
	if m.IgnoreCase {
		s, v = strings.ToLower(s), strings.ToLower(v)
	}
	switch m.Kind {
	case state.StringExact:
		return s == v
	case state.StringPrefix:
		return strings.HasPrefix(s, v)
	case state.StringSuffix:
		return strings.HasSuffix(s, v)
	case state.StringContains:
		return strings.Contains(s, v)
	case state.StringRegex:
		return m.Regex != nil && m.Regex.MatchString(s)
	}
	return false
}

// OwnID is the SPIFFE ID of src's current certificate.
func OwnID(src identity.Source) (string, error) {
	cert, err := src.Certificate()
	if err != nil {
		return "", fmt.Errorf("certificate: %w", err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if len(cert.Certificate) == 0 {
			return "", errors.New("empty certificate")
		}
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return "", fmt.Errorf("certificate: %w", err)
		}
	}
	return spiffeID(leaf)
}
