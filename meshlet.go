package meshlet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"

	"github.com/meshlet/meshlet/config"
	"github.com/meshlet/meshlet/dataplane/httpproxy"
	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/hbone"
	"github.com/meshlet/meshlet/internal/wiring"
	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/xds"
)

// runtime is a started Server: the same store, cluster runtimes, HTTP
// connection manager and xDS client the proxy builds, minus its listeners.
type runtime struct {
	opts     *Server // the frozen options
	log      *slog.Logger
	store    *state.Store
	clusters *upstream.Manager
	http     *httpproxy.Proxy
	xds      *xds.Client // nil without ADS
	adsAddr  string
	hbone    *hbone.Client

	cancel  context.CancelFunc
	xdsDone chan struct{}

	// routes picks the connection manager of each request (transport.go).
	routes routeIndex

	mu sync.Mutex
	// listeners are the open listeners of Listen and ListenHBONE, closed
	// with the Server.
	listeners map[net.Listener]struct{}
}

// start builds the runtime from the frozen options o.
func start(o *Server) (_ *runtime, err error) {
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	boot, err := loadBootstrap(o)
	if err != nil {
		return nil, err
	}
	rt := &runtime{opts: o, log: log, store: state.NewStore(), xdsDone: make(chan struct{}),
		listeners: map[net.Listener]struct{}{}}
	if boot != nil {
		wiring.SeedStatic(rt.store, boot.Listeners, boot.Clusters)
	}
	rt.clusters = upstream.NewManager(rt.store, log)
	defer func() {
		if err != nil {
			rt.clusters.Close()
		}
	}()
	if o.Identity != nil {
		rt.clusters.SetIdentity(o.Identity)
		self, err := wiring.OwnID(o.Identity)
		if err != nil {
			return nil, fmt.Errorf("meshlet: Identity: %w", err)
		}
		rt.hbone = &hbone.Client{Source: o.Identity, Log: log}
		rt.clusters.SetTunnel(&hbone.ClusterTunnel{Client: rt.hbone, Src: self, Store: rt.store, Local: o.Identity})
	}
	hostname, _ := os.Hostname()
	rt.http = httpproxy.New(rt.store, rt.clusters, httpproxy.Options{DebugHeaders: o.DebugHeaders, Hostname: hostname}, log)

	ads, delta := o.ADSAddress, o.Delta
	if boot != nil && boot.ADS != nil {
		if ads == "" {
			ads = boot.ADS.Address
		}
		delta = delta || boot.ADS.Delta
	}
	ctx, cancel := context.WithCancel(context.Background())
	rt.cancel = cancel
	if ads == "" {
		close(rt.xdsDone)
		return rt, nil
	}
	node := wiring.MergeNode(xds.NodeFromEnviron(nil, "sidecar"), wiring.BootstrapNode(boot))
	node = wiring.MergeNode(node, o.Node)
	cfg := xds.Config{Address: ads, Node: node, Delta: delta, Store: rt.store, Log: log}
	if o.RouteConfig != "" {
		cfg.Routes = []string{o.RouteConfig}
	}
	rt.xds, rt.adsAddr = xds.New(cfg), ads
	go func() {
		defer close(rt.xdsDone)
		if err := rt.xds.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			log.Error("xDS client stopped", "err", err)
		}
	}()
	return rt, nil
}

// loadBootstrap parses the configured bootstrap; nil when there is none.
func loadBootstrap(o *Server) (*config.Bootstrap, error) {
	switch {
	case o.Bootstrap != "" && len(o.BootstrapYAML) > 0:
		return nil, errors.New("meshlet: Bootstrap and BootstrapYAML are mutually exclusive")
	case o.Bootstrap != "":
		b, err := config.Load(o.Bootstrap)
		if err != nil {
			return nil, fmt.Errorf("meshlet: %w", err)
		}
		return b, nil
	case len(o.BootstrapYAML) > 0:
		b, err := config.Parse("BootstrapYAML", o.BootstrapYAML)
		if err != nil {
			return nil, fmt.Errorf("meshlet: %w", err)
		}
		return b, nil
	case o.ADSAddress == "":
		return nil, errors.New("meshlet: one of Bootstrap, BootstrapYAML and ADSAddress is required")
	}
	return nil, nil
}

// waitReady returns once xDS (when configured) delivered the first full
// configuration, or with ctx's error.
func (rt *runtime) waitReady(ctx context.Context) error {
	if rt.xds == nil {
		return nil
	}
	select {
	case <-rt.xds.Ready():
		return nil
	default:
	}
	select {
	case <-rt.xds.Ready():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("meshlet: waiting for the first xDS configuration from %s: %w", rt.adsAddr, context.Cause(ctx))
	}
}

func (rt *runtime) close() error {
	rt.cancel()
	<-rt.xdsDone
	rt.mu.Lock()
	ls := make([]net.Listener, 0, len(rt.listeners))
	for l := range rt.listeners {
		ls = append(ls, l)
	}
	rt.mu.Unlock()
	var errs []error
	for _, l := range ls {
		if err := l.Close(); err != nil && !errors.Is(err, errListenerClosed) {
			errs = append(errs, err)
		}
	}
	if rt.hbone != nil {
		_ = rt.hbone.Close()
	}
	rt.clusters.Close()
	return errors.Join(errs...)
}
