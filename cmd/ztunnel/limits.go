package main

import (
	"context"
	"flag"

	"github.com/meshlet/meshlet/dataplane"
	"github.com/meshlet/meshlet/dataplane/httpproxy"
)

// limitOptions are the process-wide overload limits: a global connection
// cap (Envoy's global_downstream_max_connections) and heap-based request
// shedding (Envoy's fixed_heap monitor with a shedding action).
type limitOptions struct {
	maxConns int64
	maxHeap  uint64
}

func (o *limitOptions) register(fs *flag.FlagSet) {
	fs.Int64Var(&o.maxConns, "max-connections", 0, "close new downstream connections over this many open ones, over all listeners (0: unlimited)")
	fs.Uint64Var(&o.maxHeap, "max-heap-bytes", 0, "answer new HTTP requests 503 (x-envoy-overloaded) while the Go heap holds at least this many bytes (0: off)")
}

// apply puts the limits into cfg.
func (o *limitOptions) apply(cfg *proxyConfig) {
	cfg.MaxConnections = o.maxConns
	if o.maxHeap > 0 {
		cfg.Overload = new(httpproxy.Overload)
	}
}

// start runs the heap monitor, if any, until the returned stop is called.
func (o *limitOptions) start(cfg *proxyConfig) (stop func()) {
	if cfg.Overload == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	m := dataplane.NewHeapMonitor(o.maxHeap, cfg.Overload)
	go func() {
		defer close(done)
		m.Run(ctx)
	}()
	return func() { cancel(); <-done }
}
