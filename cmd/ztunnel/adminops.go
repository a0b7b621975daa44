package main

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshlet/meshlet/admin"
)

// opsDeps wires the admin's operational endpoints to this proxy: the
// Envoy-shaped /config_dump from the xDS client's accepted resources,
// /stats from the listener counters, and /drain_listeners.
func (p *proxy) opsDeps() admin.OpsDeps {
	d := admin.OpsDeps{Stats: p.adminStats, DrainListeners: p.drainListeners}
	if p.xds != nil {
		d.ConfigDump = func() ([]byte, error) {
			return protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(p.xds.ConfigDump())
		}
	}
	return d
}

// adminStats renders Envoy-style listener counters.
func (p *proxy) adminStats() map[string]uint64 {
	out := map[string]uint64{}
	for name, s := range p.dp.Stats() {
		out[fmt.Sprintf("listener.%s.downstream_cx_total", name)] = s.Accepted
		out[fmt.Sprintf("listener.%s.downstream_cx_active", name)] = uint64(max(s.Active, 0))
		out[fmt.Sprintf("listener.%s.downstream_cx_drained", name)] = s.Drained
	}
	return out
}

// drainListeners fails readiness and stops every listener accepting; open
// connections get the drain time to finish. The rest of the proxy keeps
// running until the process is told to stop.
func (p *proxy) drainListeners() {
	p.draining.Store(true)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), p.drain)
		defer cancel()
		if err := p.dp.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			p.log.Warn("drain_listeners", "err", err)
		}
		p.log.Info("listeners drained")
	}()
}
