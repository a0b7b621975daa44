package telemetry

import "testing"

func TestListenerAndServerStats(t *testing.T) {
	m := NewMetrics(MetricsConfig{})
	m.SetListenerSource(func() []ListenerStats {
		return []ListenerStats{
			{Name: "0.0.0.0_15001", Active: 3, Counters: map[string]uint64{
				"downstream_cx_total": 10, "downstream_global_cx_overflow": 4, "connection_limit.limited_connections": 2}},
			{Name: "virtualInbound", Counters: map[string]uint64{"downstream_cx_total": 1}},
		}
	})
	m.SetServerSource(func() ServerStats { return ServerStats{"overload.shed_requests": 5} })
	fams := gather(t, m)
	for _, c := range []struct {
		name, listener string
		want           float64
	}{
		{"envoy_listener_downstream_cx_active", "0.0.0.0_15001", 3},
		{"envoy_listener_downstream_cx_total", "0.0.0.0_15001", 10},
		{"envoy_listener_downstream_global_cx_overflow", "0.0.0.0_15001", 4},
		{"envoy_listener_connection_limit_limited_connections", "0.0.0.0_15001", 2},
		{"envoy_listener_downstream_cx_total", "virtualInbound", 1},
		{"envoy_server_overload_shed_requests", "", 5},
	} {
		var want map[string]string
		if c.listener != "" {
			want = map[string]string{"envoy_listener_address": c.listener}
		}
		got := find(fams, c.name, want)
		if len(got) != 1 {
			t.Errorf("%s{%s}: %d series", c.name, c.listener, len(got))
			continue
		}
		if v := got[0].GetCounter().GetValue() + got[0].GetGauge().GetValue(); v != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.listener, v, c.want)
		}
	}
}
