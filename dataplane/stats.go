package dataplane

import "sync/atomic"

// ListenerStats are per-listener connection counters, cumulative over the
// listener's versions (a listener keeps its counters across updates that
// rebind it).
type ListenerStats struct {
	// Accepted counts connections served by this listener, including those
	// handed to it by a use_original_dst listener.
	Accepted uint64
	// Active is the number of open connections.
	Active int64
	// Drained counts connections that ended while their listener was
	// draining (removed, re-addressed or shut down).
	Drained uint64
	// HandedOff counts connections accepted here and handed to the listener
	// owning their original destination.
	HandedOff uint64
	// NoFilterChain counts connections closed because no chain matched
	// (or peeking failed or timed out).
	NoFilterChain uint64
	// tcp_proxy failures, by Envoy response flag: NC (no cluster), UH (no
	// healthy host), UF (connect failed).
	NoCluster, NoHealthyUpstream, UpstreamConnectFailure uint64
	// RateLimited counts connections closed by a network local_ratelimit
	// filter (Envoy's local_ratelimit.<stat_prefix>.rate_limited, summed).
	RateLimited uint64
	// RBACDenied counts connections closed by a network RBAC filter when
	// they opened, RBACClosed those closed when a policy change denied them;
	// RBACShadowDenied and RBACLogged count shadow denials and LOG matches.
	RBACDenied, RBACClosed, RBACShadowDenied, RBACLogged uint64
	// PlaintextRejected counts plaintext connections closed by a listener
	// whose every filter chain requires TLS (Istio's STRICT mTLS); they
	// are also in NoFilterChain. TLSHandshakeFailed counts failed
	// handshakes on TLS-terminating chains (bad or missing client
	// certificate, SAN mismatch, timeout).
	PlaintextRejected, TLSHandshakeFailed uint64
	// ConnectionLimited counts connections closed by a connection_limit
	// filter (Envoy's connection_limit.<stat_prefix>.limited_connections,
	// summed); GlobalLimited those closed at accept because
	// Options.MaxConnections were open (overflow).
	ConnectionLimited, GlobalLimited uint64
}

type listenerCounters struct {
	accepted, drained, handedOff, noChain atomic.Uint64
	noCluster, noHealthy, connectFail     atomic.Uint64
	active                                atomic.Int64
	rateLimited                           atomic.Uint64
	rbacDenied, rbacClosed                atomic.Uint64
	rbacShadowDenied, rbacLogged          atomic.Uint64
	plaintextRejected, tlsFailed          atomic.Uint64
	connLimited, globalLimited            atomic.Uint64
}

func (c *listenerCounters) snapshot() ListenerStats {
	return ListenerStats{
		Accepted:               c.accepted.Load(),
		Active:                 c.active.Load(),
		Drained:                c.drained.Load(),
		HandedOff:              c.handedOff.Load(),
		NoFilterChain:          c.noChain.Load(),
		NoCluster:              c.noCluster.Load(),
		NoHealthyUpstream:      c.noHealthy.Load(),
		UpstreamConnectFailure: c.connectFail.Load(),
		RateLimited:            c.rateLimited.Load(),
		RBACDenied:             c.rbacDenied.Load(),
		RBACClosed:             c.rbacClosed.Load(),
		RBACShadowDenied:       c.rbacShadowDenied.Load(),
		RBACLogged:             c.rbacLogged.Load(),
		PlaintextRejected:      c.plaintextRejected.Load(),
		TLSHandshakeFailed:     c.tlsFailed.Load(),
		ConnectionLimited:      c.connLimited.Load(),
		GlobalLimited:          c.globalLimited.Load(),
	}
}
