package main

import (
	"fmt"

	"github.com/meshlet/meshlet/dataplane"
	"github.com/meshlet/meshlet/telemetry"
)

// listenerCounters names a listener's counters as Envoy does under
// listener.<name>. (and the per-filter stats Envoy keeps under the filter's
// stat_prefix, summed per listener here). One table serves /stats and
// /stats/prometheus so the two never disagree.
func listenerCounters(s dataplane.ListenerStats) map[string]uint64 {
	return map[string]uint64{
		"downstream_cx_total":                  s.Accepted,
		"downstream_cx_drained":                s.Drained,
		"downstream_cx_handed_off":             s.HandedOff,
		"no_filter_chain_match":                s.NoFilterChain,
		"downstream_global_cx_overflow":        s.GlobalLimited,
		"connection_limit.limited_connections": s.ConnectionLimited,
		"local_ratelimit.rate_limited":         s.RateLimited,
		"rbac.denied":                          s.RBACDenied,
		"rbac.closed":                          s.RBACClosed,
		"rbac.shadow_denied":                   s.RBACShadowDenied,
		"rbac.logged":                          s.RBACLogged,
		"ssl.connection_error":                 s.TLSHandshakeFailed,
		"ssl.plaintext_rejected":               s.PlaintextRejected,
		"tcp.downstream_cx_no_route":           s.NoCluster,
		"tcp.upstream_cx_none_healthy":         s.NoHealthyUpstream,
		"tcp.upstream_cx_connect_fail":         s.UpstreamConnectFailure,
	}
}

// listenerStats feeds envoy_listener_* on the metrics port.
func (p *proxy) listenerStats() []telemetry.ListenerStats {
	all := p.dp.Stats()
	out := make([]telemetry.ListenerStats, 0, len(all))
	for name, s := range all {
		out = append(out, telemetry.ListenerStats{Name: name, Active: max(s.Active, 0), Counters: listenerCounters(s)})
	}
	return out
}

// serverStats are the process-wide overload counters.
func (p *proxy) serverStats() telemetry.ServerStats {
	out := telemetry.ServerStats{}
	if p.overload != nil {
		out["overload.shed_requests"] = p.overload.Shed()
	}
	return out
}

// addListenerStats writes every listener's counters into /stats' map.
func (p *proxy) addListenerStats(out map[string]uint64) {
	for name, s := range p.dp.Stats() {
		out[fmt.Sprintf("listener.%s.downstream_cx_active", name)] = uint64(max(s.Active, 0))
		for k, v := range listenerCounters(s) {
			out["listener."+name+"."+k] = v
		}
	}
	for k, v := range p.serverStats() {
		out["server."+k] = v
	}
}
