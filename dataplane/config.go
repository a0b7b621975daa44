package dataplane

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// defaultListenerFiltersTimeout is Envoy's listener_filters_timeout default.
const defaultListenerFiltersTimeout = 15 * time.Second

// listenerConfig is everything a new connection needs from one version of a
// listener, compiled once per update. A connection loads it when accepted
// and keeps it, so a config swap never affects open connections.
type listenerConfig struct {
	spec        *state.Listener
	chains      []*chainRuntime // parallel to spec.FilterChains
	def         *chainRuntime   // nil when there is no default_filter_chain
	matcher     *chainMatcher
	needPeek    bool
	peekTimeout time.Duration
}

// chainRuntime is a filter chain with its derived objects.
type chainRuntime struct {
	spec *state.FilterChain
	tls  *tls.Config // nil: no TLS termination
	// total is the sum of the tcp_proxy weighted_clusters weights.
	total uint64
	// limits are the chain's network local_ratelimit buckets, in order.
	limits []*policy.TokenBucket
}

func compileListener(spec *state.Listener) (*listenerConfig, error) {
	cfg := &listenerConfig{
		spec:        spec,
		chains:      make([]*chainRuntime, len(spec.FilterChains)),
		matcher:     newChainMatcher(spec.FilterChains),
		needPeek:    needsPeek(spec.FilterChains),
		peekTimeout: spec.ListenerFiltersTimeout,
	}
	if cfg.peekTimeout <= 0 {
		cfg.peekTimeout = defaultListenerFiltersTimeout
	}
	if !spec.Address.IsValid() {
		return nil, fmt.Errorf("listener %q: no socket address", spec.Name)
	}
	for i, fc := range spec.FilterChains {
		cr, err := compileChain(fc)
		if err != nil {
			return nil, fmt.Errorf("listener %q: filter chain %d (%q): %w", spec.Name, i, fc.Name, err)
		}
		cfg.chains[i] = cr
	}
	if spec.DefaultFilterChain != nil {
		cr, err := compileChain(spec.DefaultFilterChain)
		if err != nil {
			return nil, fmt.Errorf("listener %q: default_filter_chain: %w", spec.Name, err)
		}
		cfg.def = cr
	}
	return cfg, nil
}

func compileChain(fc *state.FilterChain) (*chainRuntime, error) {
	cr := &chainRuntime{spec: fc, limits: newConnLimits(fc.RateLimits)}
	switch {
	case fc.TCPProxy != nil && fc.HTTP != nil:
		return nil, errors.New("both tcp_proxy and http_connection_manager set")
	case fc.TCPProxy != nil:
		tp := fc.TCPProxy
		for _, wc := range tp.WeightedClusters {
			cr.total += uint64(wc.Weight)
		}
		if len(tp.WeightedClusters) > 0 && cr.total == 0 {
			return nil, errors.New("tcp_proxy: weighted_clusters weights sum to zero")
		}
		if len(tp.WeightedClusters) == 0 && tp.Cluster == "" {
			return nil, errors.New("tcp_proxy: no cluster")
		}
	case fc.HTTP != nil:
	default:
		return nil, errors.New("no terminal filter (tcp_proxy or http_connection_manager)")
	}
	if fc.TLS != nil {
		t, err := serverTLS(fc)
		if err != nil {
			return nil, fmt.Errorf("transport_socket tls: %w", err)
		}
		cr.tls = t
	}
	return cr, nil
}

// serverTLS builds the crypto/tls config of a DownstreamTlsContext.
func serverTLS(fc *state.FilterChain) (*tls.Config, error) {
	t := fc.TLS
	if !t.SDS.IsZero() {
		// Fail closed until SDS references are resolved here through
		// identity.SourceForSDS: serving without them would drop client
		// verification or the certificate.
		return nil, fmt.Errorf("sds secrets %q/%q: not wired into the listener yet", t.SDS.Certificate, t.SDS.Validation)
	}
	cert, err := tls.X509KeyPair(t.CertChainPEM, t.KeyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls_certificates: %w", err)
	}
	cfg := &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   t.ALPN,
	}
	if len(cfg.NextProtos) == 0 && fc.HTTP != nil {
		// Without configured ALPN an HTTP chain offers what its codec can
		// serve, so clients negotiate h2 only where HTTP/2 is served.
		switch fc.HTTP.Codec {
		case state.CodecHTTP1:
			cfg.NextProtos = []string{"http/1.1"}
		case state.CodecHTTP2:
			cfg.NextProtos = []string{"h2"}
		default:
			cfg.NextProtos = []string{"h2", "http/1.1"}
		}
	}
	switch {
	case len(t.ClientCAPEM) > 0:
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(t.ClientCAPEM) {
			return nil, errors.New("validation_context: no certificates in trusted_ca")
		}
		cfg.ClientCAs = pool
		// Envoy verifies a presented certificate against trusted_ca and
		// demands one only with require_client_certificate.
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if t.RequireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	case t.RequireClientCert:
		cfg.ClientAuth = tls.RequireAnyClientCert
	}
	return cfg, nil
}

// find selects the filter chain for a connection: the best match, else the
// default chain, else nil (the connection is closed).
func (c *listenerConfig) find(f *connFacts) *chainRuntime {
	if i := c.matcher.find(f); i >= 0 {
		return c.chains[i]
	}
	return c.def
}
