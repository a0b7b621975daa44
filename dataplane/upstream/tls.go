package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"

	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

// Identity is what TLS contexts with SDS references resolve against: the
// store holding ADS-delivered secrets and the proxy's own Source for the
// names a local agent serves (Istio's "default" and "ROOTCA"). Local may be
// nil when the proxy has no identity of its own.
type Identity struct {
	Store *state.Store
	Local identity.Source
}

// sds returns the Source for a context's SDS reference.
func (id Identity) sds(ref state.SDSRef) identity.Source {
	return identity.SourceForSDS(id.Store, ref, id.Local)
}

// transportSet is a cluster's compiled transport sockets: the default and
// the transport_socket_matches with the endpoint labels they match on.
// Replaced whole on every cluster update.
type transportSet struct {
	def     *tls.Config // nil: plaintext
	matches []transportMatch
	// labels maps an endpoint address to its envoy.transport_socket_match
	// metadata.
	labels map[string]map[string]string
}

type transportMatch struct {
	match map[string]string
	cfg   *tls.Config // nil: plaintext
}

// forHost picks the transport of h: the first match whose every key/value
// the endpoint's metadata holds, else the cluster's transport_socket.
func (t *transportSet) forHost(h *lb.Host) *tls.Config {
	if t == nil {
		return nil
	}
	if len(t.matches) > 0 && h != nil {
		md := t.labels[h.Address]
		for _, m := range t.matches {
			if subset(m.match, md) {
				return m.cfg
			}
		}
	}
	return t.def
}

// anyTLS reports whether any host may be dialed with TLS.
func (t *transportSet) anyTLS() bool {
	if t == nil {
		return false
	}
	if t.def != nil {
		return true
	}
	for _, m := range t.matches {
		if m.cfg != nil {
			return true
		}
	}
	return false
}

func subset(want, have map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

// compileTransports builds the transport set of spec for the endpoints in
// cla. A context that cannot be built fails closed: its handshakes fail
// with the error instead of falling back to plaintext.
func compileTransports(spec *state.Cluster, cla *state.ClusterLoadAssignment, id Identity) (*transportSet, []error) {
	var errs []error
	build := func(name string, t *state.UpstreamTLS) *tls.Config {
		if t == nil {
			return nil
		}
		cfg, err := clientTLS(t, id)
		if err != nil {
			err = fmt.Errorf("%s: %w", name, err)
			errs = append(errs, err)
			return failingTLS(err)
		}
		return cfg
	}
	ts := &transportSet{def: build("transport_socket", spec.TLS)}
	for i, m := range spec.TransportSocketMatches {
		ts.matches = append(ts.matches, transportMatch{match: m.Match, cfg: build(fmt.Sprintf("transport_socket_matches[%d] %q", i, m.Name), m.TLS)})
	}
	if len(ts.matches) > 0 {
		ts.labels = endpointLabels(spec, cla)
	}
	return ts, errs
}

func endpointLabels(spec *state.Cluster, cla *state.ClusterLoadAssignment) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, a := range []*state.ClusterLoadAssignment{spec.LoadAssignment, cla} {
		if a == nil {
			continue
		}
		for _, loc := range a.Localities {
			for _, ep := range loc.Endpoints {
				if ep.Address != "" && len(ep.TransportSocketMatch) > 0 {
					out[ep.Address] = maps.Clone(ep.TransportSocketMatch)
				}
			}
		}
	}
	return out
}

// failingTLS is a config every handshake fails with err: a nil config would
// mean plaintext.
func failingTLS(err error) *tls.Config {
	return &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(tls.ConnectionState) error { return err }} //nolint:gosec // every handshake fails
}

// clientTLS builds the upstream TLS config with Envoy's semantics: without
// a validation context the server certificate is not verified; with
// trusted_ca (static, SDS or the system store) its chain is verified, and a
// host name is checked only through subject-alt-name matchers. Go ties
// chain and name checks together, so the check is done by PeerCheck.
// Certificates and bundles from SDS are fetched on every handshake, so a
// rotation needs no cluster update.
func clientTLS(t *state.UpstreamTLS, id Identity) (*tls.Config, error) {
	cfg := &tls.Config{
		ServerName:         t.SNI,
		NextProtos:         t.ALPN,
		InsecureSkipVerify: true, //nolint:gosec // verification by PeerCheck, as Envoy does it
		MinVersion:         tls.VersionTLS12,
	}
	applyParams(cfg, t.Params)
	var sds identity.Source
	if !t.SDS.IsZero() {
		sds = id.sds(t.SDS)
	}
	check := &PeerCheck{SANs: t.SANMatchers, Usage: x509.ExtKeyUsageServerAuth, Require: true, MaxDepth: t.Params.MaxVerifyDepth}
	switch {
	case t.InsecureSkipVerify:
		check = nil
	case t.SDS.Validation != "":
		check.Trust = identity.TrustOf(sds) // the secret may carry max_verify_depth
	case len(t.RootCAPEM) > 0:
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(t.RootCAPEM) {
			return nil, fmt.Errorf("validation_context: no certificates in trusted_ca")
		}
		check.Roots = func() (*x509.CertPool, error) { return pool, nil }
	case t.SystemRoots:
		pool, err := x509.SystemCertPool()
		if err != nil {
			return nil, fmt.Errorf("validation_context.system_root_certs: %w", err)
		}
		check.Roots = func() (*x509.CertPool, error) { return pool, nil }
	case len(t.SANMatchers) > 0:
		// Envoy refuses this too: a name check without a chain check
		// proves nothing.
		return nil, fmt.Errorf("validation_context: subject alt name matchers need a trusted CA")
	default:
		check = nil
	}
	if check != nil {
		cfg.VerifyConnection = check.Verify
	}
	switch {
	case t.SDS.Certificate != "":
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return sds.Certificate()
		}
	case len(t.CertChainPEM) > 0:
		cert, err := tls.X509KeyPair(t.CertChainPEM, t.KeyPEM)
		if err != nil {
			return nil, fmt.Errorf("tls_certificates: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// applyParams sets tls_params on cfg. The decoder has validated them.
func applyParams(cfg *tls.Config, p state.TLSParams) {
	if p.MinVersion != 0 {
		cfg.MinVersion = p.MinVersion
	}
	if p.MaxVersion != 0 {
		cfg.MaxVersion = p.MaxVersion
	}
	if len(p.CipherSuites) > 0 {
		cfg.CipherSuites = p.CipherSuites
	}
	if len(p.Curves) > 0 {
		cfg.CurvePreferences = p.Curves
	}
}

// ApplyTLSParams sets tls_params on a listener's config (shared with the
// dataplane so both sides read them the same way).
func ApplyTLSParams(cfg *tls.Config, p state.TLSParams) { applyParams(cfg, p) }

// SetIdentity sets the proxy's own certificate Source, which TLS contexts
// whose SDS secrets a local agent serves resolve to. It applies to the
// next handshake of every cluster; nil removes it.
func (m *Manager) SetIdentity(src identity.Source) {
	m.local.Store(&localSource{src: src})
}

type localSource struct{ src identity.Source }

// managerLocal reads the Manager's current identity on every call, so
// SetIdentity needs no recompilation of cluster configs.
type managerLocal struct{ m *Manager }

func (l managerLocal) get() (identity.Source, error) {
	if b := l.m.local.Load(); b != nil && b.src != nil {
		return b.src, nil
	}
	return nil, errNoLocalIdentity
}

func (l managerLocal) Certificate() (*tls.Certificate, error) {
	src, err := l.get()
	if err != nil {
		return nil, err
	}
	return src.Certificate()
}

func (l managerLocal) Roots() (*x509.CertPool, error) {
	src, err := l.get()
	if err != nil {
		return nil, err
	}
	return src.Roots()
}

var errNoLocalIdentity = errors.New("sds: the proxy has no identity of its own (start it with --ca-dir, --ca-address or --cert-file)")

// Identity returns what listeners resolve SDS references against: the
// Manager's store and its current identity (SetIdentity).
func (m *Manager) Identity() Identity {
	return Identity{Store: m.store, Local: managerLocal{m}}
}
