package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"sync/atomic"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"

	"google.golang.org/grpc"

	"github.com/meshlet/meshlet/admin"
	"github.com/meshlet/meshlet/dataplane"
	"github.com/meshlet/meshlet/dataplane/httpproxy"
	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/internal/wiring"
	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/telemetry"
	"github.com/meshlet/meshlet/xds"
)

// proxyConfig is everything startProxy needs; run fills it from the
// bootstrap and flags, demo from its own setup.
type proxyConfig struct {
	Node xds.Node
	// Static resources from the bootstrap.
	Listeners []*state.Listener
	Clusters  []*state.Cluster
	// ADSAddress, when set, starts the xDS client.
	ADSAddress   string
	Delta        bool
	DebugHeaders bool
	DrainTime    time.Duration
	// AdminAddress must be loopback; "" disables the admin server.
	AdminAddress string
	// HBONE, when enabled, tunnels HBONE clusters and serves the inbound.
	HBONE *hboneOptions
	// Identity, when set, is the proxy's own certificate Source (local
	// agent SDS names and HBONE without explicit files); the caller owns it.
	Identity identity.Source
	Log      *slog.Logger
	// MetricsAddress serves Prometheus metrics (metrics.go); "" disables
	// them. Principal is the local SPIFFE ID for their labels.
	MetricsAddress string
	Principal      string
	// Sinks receive request and connection records besides the metrics
	// and the access logs.
	Sinks []telemetry.Sink
	// LogLevel, when set, is the level /logging changes (adminops.go).
	LogLevel *slog.LevelVar
	// Bootstrap, when set, is the parsed bootstrap file whose static
	// resources /config_dump shows (adminops.go).
	Bootstrap *bootstrapv3.Bootstrap
	// InheritedAdmin and InheritedMetrics are the predecessor's admin and
	// metrics sockets in an upgrade (upgradeports.go); nil binds anew.
	InheritedAdmin, InheritedMetrics net.Listener
	// XDSDialOptions secure the ADS connection (xdstls.go); nil is
	// plaintext.
	XDSDialOptions []grpc.DialOption
	// Inherited, MaxConnections and Overload: upgrade.go and limits.go.
	Inherited      map[string]*net.TCPListener
	MaxConnections int64
	Overload       *httpproxy.Overload
	// ProxyMark is SO_MARK on every socket the proxy dials (0: none) and
	// Transparent picks listeners opened with IP_TRANSPARENT (launch.go).
	ProxyMark   uint32
	Transparent func(*state.Listener) bool
}

// proxy is a running data plane with its control loops.
type proxy struct {
	log      *slog.Logger
	store    *state.Store
	clusters *upstream.Manager
	dp       *dataplane.Server
	admin    *admin.Server
	xds      *xds.Client    // nil without ADS
	hbone    *hboneRuntime  // nil without HBONE
	metrics  *metricsServer // nil without metrics
	drain    time.Duration
	// accessLogs writes the configured access_log entries (accesslog.go).
	accessLogs *accessLogs
	// telemetry is the metrics sink (nil without metrics); other
	// components add their collectors to it (addCollector).
	telemetry *telemetry.Metrics
	// ops holds what the admin's operational endpoints use (adminops.go).
	ops opsState
	// overload is the heap overload action's state (nil when off).
	overload *httpproxy.Overload
	// statusLn is the readiness port's socket (launch_status.go), handed to
	// a successor in an upgrade.
	statusLn atomic.Pointer[net.Listener]
	// gateway is the SNI gateway (gateway.go), handed over likewise.
	gateway atomic.Pointer[dataplane.Gateway]

	cancelXDS context.CancelFunc
	xdsDone   chan struct{}
	draining  atomic.Bool
}

// startProxy wires and starts everything. On error whatever was started is
// stopped again.
func startProxy(cfg proxyConfig) (_ *proxy, err error) {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	p := &proxy{log: log, store: state.NewStore(), drain: cfg.DrainTime, xdsDone: make(chan struct{})}
	p.ops.init(cfg)
	p.overload = cfg.Overload
	if p.drain <= 0 {
		p.drain = dataplane.DefaultDrainTimeout
	}
	wiring.SeedStatic(p.store, cfg.Listeners, cfg.Clusters)

	hostname, _ := os.Hostname()
	p.clusters = upstream.NewManager(p.store, log)
	p.clusters.SetMark(cfg.ProxyMark)
	if cfg.Identity != nil {
		p.clusters.SetIdentity(cfg.Identity)
	}
	var metrics *telemetry.Metrics
	if cfg.MetricsAddress != "" {
		metrics = p.newMetrics(cfg.Node, cfg.Principal)
	}
	p.telemetry = metrics
	p.accessLogs = newAccessLogs(p.store, log)
	sink := telemetry.Multi(append([]telemetry.Sink{metricsSink(metrics), p.accessLogs}, cfg.Sinks...)...)
	hp := httpproxy.New(p.store, p.clusters, httpproxy.Options{DebugHeaders: cfg.DebugHeaders, Hostname: hostname, Sink: sink, Overload: cfg.Overload}, log)
	p.dp = dataplane.New(p.store, p.clusters, hp, dataplane.Options{DrainTimeout: p.drain, Log: log, Sink: sink, Inherited: cfg.Inherited, MaxConnections: cfg.MaxConnections, Transparent: cfg.Transparent})
	defer func() {
		if err != nil {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = p.shutdown(ctx)
		}
	}()
	if err := p.dp.Start(); err != nil {
		return p, fmt.Errorf("dataplane: %w", err)
	}
	if cfg.HBONE.enabled() || cfg.Identity != nil {
		if p.hbone, err = startHBONE(cfg.HBONE, p.clusters, cfg.Identity, hboneEnv{Node: cfg.Node, Sink: sink}, log); err != nil {
			return p, err
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	p.cancelXDS = cancel
	if cfg.ADSAddress != "" {
		p.xds = xds.New(xds.Config{Address: cfg.ADSAddress, Node: cfg.Node, Delta: cfg.Delta, Store: p.store, Log: log,
			DialOptions: append(markedXDSDialOptions(cfg.ADSAddress, p.clusters.DialControl(), cfg.ProxyMark), cfg.XDSDialOptions...)})
		go func() {
			defer close(p.xdsDone)
			if err := p.xds.Run(ctx); err != nil {
				log.Error("xDS client stopped", "err", err)
			}
		}()
	} else {
		close(p.xdsDone)
	}

	if cfg.AdminAddress != "" {
		bi := readBuildInfo()
		deps := admin.Deps{
			Store:     p.store,
			Clusters:  p.clusters,
			Ready:     p.ready,
			Listeners: p.listenerStatus,
			XDSStatus: p.xdsStatus,
			Info: admin.ServerInfo{
				Version: bi.Version, GoVersion: bi.GoVersion, Commit: bi.Commit,
				NodeID: cfg.Node.ID, Cluster: cfg.Node.Cluster,
			},
			Log:     log,
			OpsDeps: p.opsDeps(),
		}
		if cfg.InheritedAdmin != nil {
			p.admin = admin.Serve(cfg.InheritedAdmin, deps)
		} else if p.admin, err = admin.New(cfg.AdminAddress, deps); err != nil {
			return p, err
		}
		log.Info("admin listening", "addr", p.admin.Addr().String())
	}
	if metrics != nil {
		// Like Istio's agent, a busy metrics port is not fatal: traffic
		// matters more than its statistics.
		if p.metrics, err = startMetricsServer(cfg.MetricsAddress, cfg.InheritedMetrics, metrics, log); err != nil {
			log.Error("metrics disabled", "addr", cfg.MetricsAddress, "err", err)
			err = nil
		}
	}
	return p, nil
}

// ready is nil once xDS (when configured) has synced and every listener
// that binds a port has its socket.
func (p *proxy) ready() error {
	if p.draining.Load() {
		return errors.New("draining")
	}
	if p.xds != nil {
		select {
		case <-p.xds.Ready():
		default:
			return errors.New("waiting for the first xDS configuration")
		}
	}
	errs := p.dp.Errors()
	snap := p.store.Load()
	for _, name := range sortedKeys(snap.Listeners) {
		if !snap.Listeners[name].BindToPort {
			continue
		}
		if e := errs[name]; e != "" {
			return fmt.Errorf("listener %q: %s", name, e)
		}
		if p.dp.Addr(name) == nil {
			return fmt.Errorf("listener %q not bound yet", name)
		}
	}
	return nil
}

// waitReady polls ready until it holds or ctx ends.
func (p *proxy) waitReady(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		err := p.ready()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxy not ready: %w", err)
		case <-t.C:
		}
	}
}

func (p *proxy) listenerStatus() []admin.ListenerStatus {
	errs := p.dp.Errors()
	snap := p.store.Load()
	out := make([]admin.ListenerStatus, 0, len(snap.Listeners))
	for _, name := range sortedKeys(snap.Listeners) {
		ls := admin.ListenerStatus{Name: name, Error: errs[name]}
		if a := p.dp.Addr(name); a != nil {
			ls.Addr = a.String()
		}
		out = append(out, ls)
	}
	return out
}

func (p *proxy) xdsStatus() any {
	if p.xds == nil {
		return nil
	}
	return p.xds.Status()
}

// listenerAddr returns the bound address of a listener (nil when unbound).
func (p *proxy) listenerAddr(name string) net.Addr { return p.dp.Addr(name) }

// shutdown fails readiness, drains the listeners (bounded by the drain time
// and ctx), then stops xDS, admin and the upstream pools.
func (p *proxy) shutdown(ctx context.Context) error {
	p.draining.Store(true)
	var errs []error
	dctx, cancel := context.WithTimeout(ctx, p.drain)
	defer cancel()
	// HBONE tunnels drain alongside the listeners: GOAWAY now, so peers
	// open new tunnels elsewhere while these finish.
	hboneDone := make(chan struct{})
	go func() {
		defer close(hboneDone)
		p.hbone.shutdown(dctx)
	}()
	if err := p.dp.Shutdown(dctx); err != nil {
		errs = append(errs, fmt.Errorf("dataplane shutdown: %w", err))
	}
	<-hboneDone
	if p.cancelXDS != nil {
		p.cancelXDS()
		<-p.xdsDone
	}
	if p.admin != nil {
		if err := p.admin.Shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("admin shutdown: %w", err))
		}
	}
	if err := p.metrics.shutdown(ctx); err != nil {
		errs = append(errs, fmt.Errorf("metrics shutdown: %w", err))
	}
	p.clusters.Close()
	p.accessLogs.close()
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
