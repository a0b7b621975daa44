package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/meshlet/meshlet/internal/memtrim"
	"io"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/meshlet/meshlet/config"
	"github.com/meshlet/meshlet/internal/wiring"
	"github.com/meshlet/meshlet/xds"
)

// defaultAdminAddress is Istio's admin port, loopback only.
const defaultAdminAddress = "127.0.0.1:15000"

func runCmd(args []string, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bootstrap := fs.String("bootstrap", "", "bootstrap file (Envoy bootstrap v3 subset, YAML or JSON)")
	delta := fs.Bool("delta", false, "use delta ADS instead of state-of-the-world")
	debugHeaders := fs.Bool("debug-headers", false, "add x-meshlet-response-flags and x-meshlet-upstream to responses")
	drain := fs.Duration("drain-time", 10*time.Second, "how long open connections may finish on shutdown")
	readinessDelay := fs.Duration("readiness-delay", 0, "on SIGTERM or /quitquitquit, how long /ready fails before listeners stop accepting (time for endpoints to be withdrawn; Istio's terminationDrainDuration)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	adminAddr := fs.String("admin", "", "admin address (loopback); default: the bootstrap's, else "+defaultAdminAddress)
	nodeType := fs.String("node-type", "sidecar", `xDS node type prefix: "sidecar" or "ztunnel"`)
	var hb hboneOptions
	hb.register(fs)
	var wbo whiteboxOptions
	wbo.register(fs)
	var gwo gatewayOptions
	gwo.register(fs)
	var ido identityOptions
	ido.register(fs, getenv)
	var xto xdsTLSOptions
	xto.register(fs, "the ADS address", true)
	metricsAddr := fs.String("metrics", defaultMetricsAddress, `Prometheus metrics address (/stats/prometheus, /metrics); "" disables`)
	var uo upgradeOptions
	uo.register(fs)
	var co captureOptions
	co.register(fs)
	var ipo inpodOptions
	ipo.register(fs, getenv)
	var dno dnsOptions
	dno.register(fs)
	var lo limitOptions
	lo.register(fs)
	var lao launchOptions
	lao.register(fs)
	trimMemory := fs.Bool("trim-memory", true, "after start-up, unmap start-up-only binary pages, and return heap freed after traffic bursts to the system")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if err := lao.takeApp(args, fs.Args()); err != nil {
		fmt.Fprintf(stderr, "ztunnel run: %v\n", err)
		return exitUsage
	}
	if *bootstrap == "" {
		fmt.Fprintln(stderr, "ztunnel run: --bootstrap FILE is required")
		return exitUsage
	}
	usr1 := notifyReopen()
	log, level, err := newLevelLogger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "ztunnel run: %v\n", err)
		return exitUsage
	}
	b, err := config.Load(*bootstrap)
	if err != nil {
		fmt.Fprintf(stderr, "ztunnel: %v\n", err)
		return config.ExitCode
	}

	cfg := proxyConfig{
		Node:         mergeNode(xds.NodeFromEnv(getenv, *nodeType), b),
		Listeners:    b.Listeners,
		Clusters:     b.Clusters,
		Delta:        *delta,
		DebugHeaders: *debugHeaders,
		DrainTime:    *drain,
		AdminAddress: defaultAdminAddress,
		HBONE:        &hb,
		Log:          log,
		// Metrics default on in run mode only (tests and the demo pass
		// their own proxyConfig).
		MetricsAddress: *metricsAddr,
		LogLevel:       level,
	}
	if cfg.Bootstrap, err = readBootstrapProto(*bootstrap); err != nil {
		log.Warn("config_dump will not show the bootstrap", "err", err)
	}
	startCtx, cancelStart := context.WithTimeout(context.Background(), 30*time.Second)
	ido.DialOptions = markedDialOptions(ido.CAAddress, lao.proxyMark, log)
	local, err := ido.start(startCtx, log)
	cancelStart()
	if err != nil {
		fmt.Fprintf(stderr, "ztunnel: %v\n", err)
		return exitFailure
	}
	defer local.stop()
	if local != nil {
		cfg.Identity = local.src
		cfg.Principal = local.id
	}
	if b.ADS != nil {
		cfg.ADSAddress = b.ADS.Address
		cfg.Delta = cfg.Delta || b.ADS.Delta
	}
	if a := getenv("XDS_ADDRESS"); a != "" {
		cfg.ADSAddress = a
	}
	if b.AdminAddress != "" {
		cfg.AdminAddress = b.AdminAddress
	}
	if *adminAddr != "" {
		cfg.AdminAddress = *adminAddr
	}
	if cfg.XDSDialOptions, err = xto.dialOptions(cfg.ADSAddress, cfg.Identity); err != nil {
		fmt.Fprintf(stderr, "ztunnel run: %v\n", err)
		return exitUsage
	}

	lo.apply(&cfg)
	if err := lao.prepare(&cfg, &co, &wbo); err != nil {
		fmt.Fprintf(stderr, "ztunnel run: %v\n", err)
		return exitUsage
	}
	inherited, handoff, err := uo.receive(log)
	if err != nil {
		fmt.Fprintf(stderr, "ztunnel: %v\n", err)
		return exitFailure
	}
	inheritedPorts := takePortListeners(inherited, &cfg, lao.statusAddr, gwo.Addr)
	cfg.Inherited = inherited
	dno.markNode(co.dns, &cfg) // NDS rides the main ADS stream: DNS_CAPTURE before it opens
	p, err := startProxy(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "ztunnel: %v\n", err)
		return exitFailure
	}
	// abort stops the proxy after a later start-up step failed.
	abort := func(what string, err error) int {
		fmt.Fprintf(stderr, "ztunnel: %s%v\n", what, err)
		sctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTime)
		defer cancel()
		_ = p.shutdown(sctx)
		return exitFailure
	}
	stopLimits := lo.start(&cfg)
	defer stopLimits()
	up, err := uo.finishUpgrade(handoff, p, log)
	if err != nil {
		return abort("", err)
	}
	defer up.close()
	wb, err := startWhitebox(&wbo, p, log)
	if err != nil {
		return abort("", err)
	}
	gw, err := startGateway(&gwo, inheritedPorts.gateway, p, cfg.Identity, log)
	if err != nil {
		return abort("", err)
	}
	dnsp, err := startDNS(&dno, co.dns, p, &cfg, getenv, log)
	if err != nil {
		return abort("dns: ", err)
	}
	defer dnsp.stop() // after capture is removed (deferred later, runs first)
	// eBPF inbound capture hands connections to the inbound listener's socket.
	co.listeners = p.dp.ListenerFiles
	co.addCollector = p.addCollector // meshlet_capture_* on the metrics port
	stopCapture, err := startCapture(&co, log)
	if err != nil {
		return abort("capture: ", err)
	}
	defer stopCapture() // after the drain below
	inpodRT, err := startInpod(&ipo, &ido, p, log)
	if err != nil {
		return abort("in-pod: ", err)
	}
	stopStatus, err := startStatus(lao.statusAddr, inheritedPorts.status, p, local, log)
	if err != nil {
		return abort("", err)
	}
	defer stopStatus()
	log.Info("proxy started", "node", cfg.Node.ID, "ads", cfg.ADSAddress, "delta", cfg.Delta,
		"static_listeners", len(cfg.Listeners), "static_clusters", len(cfg.Clusters))
	appCode := lao.run(p, wb, local, log, stderr) // with -- APP: returns once the app has exited

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	p.accessLogs.reopenOnSignal(ctx, usr1)
	if *trimMemory {
		go trimAfterStart(ctx, p, log)
	}
	select {
	case <-lao.exited():
		*readinessDelay = 0 // nothing sends to a pod whose app is gone
	case <-ctx.Done():
		log.Info("signal received; draining", "drain_time", cfg.DrainTime, "readiness_delay", *readinessDelay)
	case <-p.quitRequested():
		log.Info("quitquitquit; draining", "drain_time", cfg.DrainTime, "readiness_delay", *readinessDelay)
	case <-up.done():
		// The successor serves the same sockets: no endpoint has to be
		// withdrawn first, so there is no readiness delay.
		log.Info("upgraded; draining", "drain_time", cfg.DrainTime)
		*readinessDelay = 0
	}
	stop() // a second signal kills the process the default way
	p.failReadiness(*readinessDelay)

	sctx, cancel := context.WithTimeout(context.Background(), cfg.DrainTime+5*time.Second)
	defer cancel()
	stopWhitebox(wb)
	inpodRT.stop(sctx, log) // pods' rules and listeners go before the data plane drains
	waitGateway := stopGateway(sctx, gw)
	if err := p.shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		log.Warn("shutdown", "err", err)
	}
	waitGateway()
	log.Info("stopped")
	return appCode
}

// mergeNode lays the bootstrap's node fields over the environment's: set
// fields win, metadata merges key by key.
func mergeNode(env xds.Node, bootstrap *config.Bootstrap) xds.Node {
	return wiring.MergeNode(env, wiring.BootstrapNode(bootstrap))
}

// trimAfterStart waits until the proxy is ready (its start-up code has run),
// then unmaps start-up-only binary pages once and keeps shrinking the heap
// after bursts. Neither runs on a data-path goroutine.
func trimAfterStart(ctx context.Context, p *proxy, log *slog.Logger) {
	wctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := p.waitReady(wctx)
	cancel()
	if err != nil {
		return
	}
	if n, err := memtrim.TrimBinaryPages(); err != nil {
		log.Warn("trimming start-up pages", "err", err)
	} else {
		log.Debug("trimmed start-up pages", "advised_bytes", n)
	}
	memtrim.ShrinkHeap(ctx, 10*time.Second)
}
