package dataplane

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/meshlet/meshlet/dataplane/upstream"
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
	// tlsOnly: every chain matches transport_protocol "tls" only and there
	// is no default chain, so a plaintext connection can never be served
	// (STRICT); such connections are counted apart.
	tlsOnly bool
}

// chainRuntime is a filter chain with its derived objects.
type chainRuntime struct {
	spec *state.FilterChain
	tls  *tls.Config // nil: no TLS termination
	// local caches the URI SANs of tls's certificate (xfcc.go).
	local localURIs
	// total is the sum of the tcp_proxy weighted_clusters weights.
	total uint64
	// limits are the chain's network local_ratelimit buckets, in order.
	limits []*policy.TokenBucket
	// connLimits are the chain's connection_limit filters (limits.go).
	connLimits []*connLimiter
}

func compileListener(spec *state.Listener) (*listenerConfig, error) {
	return compileListenerWith(spec, upstream.Identity{})
}

// compileListenerWith compiles spec, resolving SDS references through id.
func compileListenerWith(spec *state.Listener, id upstream.Identity) (*listenerConfig, error) {
	cfg := &listenerConfig{
		spec:        spec,
		chains:      make([]*chainRuntime, len(spec.FilterChains)),
		matcher:     newChainMatcher(spec.FilterChains),
		needPeek:    needsPeek(spec.FilterChains),
		peekTimeout: spec.ListenerFiltersTimeout,
	}
	if cfg.peekTimeout == 0 {
		cfg.peekTimeout = defaultListenerFiltersTimeout
	}
	cfg.tlsOnly = tlsOnly(spec)
	if !spec.Address.IsValid() {
		return nil, fmt.Errorf("listener %q: no socket address", spec.Name)
	}
	for i, fc := range spec.FilterChains {
		cr, err := compileChain(fc, id)
		if err != nil {
			return nil, fmt.Errorf("listener %q: filter chain %d (%q): %w", spec.Name, i, fc.Name, err)
		}
		cfg.chains[i] = cr
	}
	if spec.DefaultFilterChain != nil {
		cr, err := compileChain(spec.DefaultFilterChain, id)
		if err != nil {
			return nil, fmt.Errorf("listener %q: default_filter_chain: %w", spec.Name, err)
		}
		cfg.def = cr
	}
	return cfg, nil
}

func compileChain(fc *state.FilterChain, id upstream.Identity) (*chainRuntime, error) {
	cr := &chainRuntime{spec: fc, limits: newConnLimits(fc.RateLimits), connLimits: newConnLimiters(fc.ConnectionLimits)}
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
		t, err := serverTLS(fc, id)
		if err != nil {
			return nil, fmt.Errorf("transport_socket tls: %w", err)
		}
		cr.tls = t
	}
	return cr, nil
}

func tlsOnly(spec *state.Listener) bool {
	if spec.DefaultFilterChain != nil || len(spec.FilterChains) == 0 {
		return false
	}
	for _, fc := range spec.FilterChains {
		if fc.Match.TransportProtocol != "tls" {
			return false
		}
	}
	return true
}

// find selects the filter chain for a connection: the best match, else the
// default chain, else nil (the connection is closed).
func (c *listenerConfig) find(f *connFacts) *chainRuntime {
	if i := c.matcher.find(f); i >= 0 {
		return c.chains[i]
	}
	return c.def
}
