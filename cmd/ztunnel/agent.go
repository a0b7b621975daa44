package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"

	"github.com/meshlet/meshlet/agent"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/internal/memtrim"
)

// Istio's paths for the grpc-agent template, relative like pilot-agent's
// (the container's working directory is /).
const (
	defaultAgentBootstrap = "./etc/istio/proxy/grpc-bootstrap.json"
	defaultAgentXDSListen = "unix://./etc/istio/proxy/XDS"
	defaultAgentCertDir   = "./var/lib/istio/data"
)

// agentOptions are `ztunnel agent`'s flags besides the identity ones.
type agentOptions struct {
	bootstrapOut, xdsListen, xdsAddress string
	xds                                 xdsTLSOptions
	certDir                             string
	certRefresh                         time.Duration
	serverTemplate, clientTemplate      string
	nodeType, logLevel                  string
	app                                 []string
}

func (o *agentOptions) register(fs *flag.FlagSet, getenv func(string) string) {
	fs.StringVar(&o.bootstrapOut, "bootstrap-out", envOr(getenv, "GRPC_XDS_BOOTSTRAP", defaultAgentBootstrap), "where to write the gRPC xDS bootstrap (default $GRPC_XDS_BOOTSTRAP, else Istio's path)")
	fs.StringVar(&o.xdsListen, "xds-listen", defaultAgentXDSListen, `where applications reach the xDS proxy: "unix://PATH" or a loopback "127.0.0.1:PORT"`)
	fs.StringVar(&o.xdsAddress, "xds-address", getenv("XDS_ADDRESS"), "the control plane's ADS address (default $XDS_ADDRESS)")
	o.xds.register(fs, "--xds-address", false)
	fs.StringVar(&o.certDir, "cert-dir", envOr(getenv, "OUTPUT_CERTS", defaultAgentCertDir), "where the agent writes cert-chain.pem, key.pem and root-cert.pem for the application (default $OUTPUT_CERTS)")
	fs.DurationVar(&o.certRefresh, "cert-refresh", 5*time.Minute, "how often the application's file_watcher re-reads the certificate files; keep it well under the time a certificate has left when renewed")
	fs.StringVar(&o.serverTemplate, "server-listener-template", agent.ServerListenerTemplate, "server_listener_resource_name_template of the bootstrap")
	fs.StringVar(&o.clientTemplate, "client-listener-template", "", "client_default_listener_resource_name_template of the bootstrap (unset: grpc's default)")
	fs.StringVar(&o.nodeType, "node-type", "sidecar", "xDS node id prefix, as pilot-agent's")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
}

func agentCmd(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ao agentOptions
	ao.register(fs, getenv)
	var ido identityOptions
	ido.register(fs, getenv)
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if rest := fs.Args(); len(rest) > 0 {
		if i := len(args) - len(rest) - 1; i < 0 || args[i] != "--" {
			fmt.Fprintf(stderr, "ztunnel agent: unexpected arguments %q (put the application after --)\n", rest)
			return exitUsage
		}
		ao.app = rest
	}
	if ao.xdsAddress == "" {
		fmt.Fprintln(stderr, "ztunnel agent: --xds-address (or $XDS_ADDRESS) is required")
		return exitUsage
	}
	log, err := newLogger(stderr, ao.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "ztunnel agent: %v\n", err)
		return exitUsage
	}
	cfg, closeCA, err := ao.config(&ido, getenv, log)
	if err != nil {
		fmt.Fprintf(stderr, "ztunnel agent: %v\n", err)
		return exitUsage
	}
	defer closeCA()

	// Signals are caught from here on: before the application runs they
	// stop the agent, afterwards they go to the application.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)

	startCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	a, err := agent.Start(startCtx, cfg)
	cancel()
	if err != nil {
		fmt.Fprintf(stderr, "ztunnel agent: %v\n", err)
		return exitFailure
	}
	defer a.Close()
	bootstrap, err := filepath.Abs(cfg.BootstrapPath)
	if err != nil {
		bootstrap = cfg.BootstrapPath
	}
	fmt.Fprintf(stdout, "GRPC_XDS_BOOTSTRAP=%s\n", bootstrap)
	log.Info("agent started", "bootstrap", bootstrap, "xds", a.Proxy.ServerURI(), "upstream", cfg.Upstream,
		"node", cfg.Node.ID, "cert_files", cfg.CertFiles != nil, "writes_certs", a.Certs != nil)
	// Start-up code and garbage are not needed again: give the pages
	// back once, with no timer left running.
	if _, err := memtrim.TrimBinaryPages(); err != nil {
		log.Debug("trimming start-up pages", "err", err)
	}
	debug.FreeOSMemory()

	if len(ao.app) == 0 {
		sig := <-sigs
		log.Info("signal received; stopping", "signal", sig.String())
		return exitOK
	}
	return runAgentApp(ao.app, bootstrap, sigs, log, stderr)
}

// runAgentApp runs the application with GRPC_XDS_BOOTSTRAP set, forwards
// signals to it and returns its exit code. It is the agent's own small
// launcher: `ztunnel run`'s (launch_run.go) is tied to the proxy's
// readiness, which the agent does not have; the exit-code conventions are
// shared.
func runAgentApp(app []string, bootstrap string, sigs <-chan os.Signal, log *slog.Logger, stderr io.Writer) int {
	cmd := exec.Command(app[0], app[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = append(os.Environ(), "GRPC_XDS_BOOTSTRAP="+bootstrap)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "ztunnel agent: starting %s: %v\n", app[0], err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return exitAppNotFound
		}
		return exitAppNotRunnable
	}
	log.Info("app started", "app", app[0], "pid", cmd.Process.Pid)
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	for {
		select {
		case sig := <-sigs:
			log.Info("forwarding signal to the app", "signal", sig.String(), "pid", cmd.Process.Pid)
			_ = cmd.Process.Signal(sig)
		case <-done:
			code := exitCode(cmd.ProcessState)
			log.Info("app exited; stopping", "code", code)
			return code
		}
	}
}

// config turns the flags into an agent.Config. The certificate source is
// the identity flags' choice: files (the bootstrap points at them as they
// are), the built-in CA or the Istio CA (the agent writes --cert-dir), or
// none (no certificate provider in the bootstrap).
func (o *agentOptions) config(ido *identityOptions, getenv func(string) string, log *slog.Logger) (agent.Config, func(), error) {
	noop := func() {}
	cfg := agent.Config{
		BootstrapPath:          o.bootstrapOut,
		Listen:                 o.xdsListen,
		Upstream:               o.xdsAddress,
		Node:                   agent.NodeFromEnv(getenv, o.nodeType),
		Refresh:                o.certRefresh,
		ServerListenerTemplate: o.serverTemplate,
		ClientListenerTemplate: o.clientTemplate,
		Log:                    log,
	}
	ut, err := o.xds.spec()
	if err != nil {
		return cfg, noop, err
	}
	cfg.UpstreamTLS = ut
	if !ido.enabled() {
		log.Warn("no identity flags: the bootstrap has no certificate provider, so xDS security is unavailable to the app")
		return cfg, noop, nil
	}
	if ido.CertFile != "" || ido.KeyFile != "" || ido.RootsFile != "" {
		if ido.CADir != "" || ido.CAAddress != "" {
			return cfg, noop, errors.New("--cert-file/--key-file/--roots-file cannot be combined with --ca-dir or --ca-address")
		}
		if ido.CertFile == "" || ido.KeyFile == "" || ido.RootsFile == "" {
			return cfg, noop, errors.New("--cert-file, --key-file and --roots-file go together")
		}
		files := agent.CertFiles{Cert: ido.CertFile, Key: ido.KeyFile, Root: ido.RootsFile}
		for _, p := range []*string{&files.Cert, &files.Key, &files.Root} {
			if abs, err := filepath.Abs(*p); err == nil {
				*p = abs
			}
		}
		cfg.CertFiles = &files
		return cfg, noop, nil
	}
	id := identity.ID{TrustDomain: ido.TrustDomain, Namespace: ido.Namespace, ServiceAccount: ido.ServiceAccount}
	if err := id.Validate(); err != nil {
		return cfg, noop, fmt.Errorf("TRUST_DOMAIN/POD_NAMESPACE/SERVICE_ACCOUNT: %w", err)
	}
	if ido.CertLifetime <= 0 {
		return cfg, noop, errors.New("--cert-lifetime must be positive")
	}
	if ido.RotationFraction <= 0 || ido.RotationFraction >= 1 {
		return cfg, noop, errors.New("--rotation-fraction must be between 0 and 1")
	}
	// The application must read a renewed certificate before the old one
	// expires: a renewal leaves (1-fraction) of the lifetime.
	if left := time.Duration(float64(ido.CertLifetime) * (1 - ido.RotationFraction)); o.certRefresh >= left {
		return cfg, noop, fmt.Errorf("--cert-refresh %s must be shorter than the %s a certificate has left when renewed (--cert-lifetime %s, --rotation-fraction %g)",
			o.certRefresh, left, ido.CertLifetime, ido.RotationFraction)
	}
	// The application may run in another directory: the bootstrap names
	// absolute paths.
	certDir, err := filepath.Abs(o.certDir)
	if err != nil {
		return cfg, noop, fmt.Errorf("--cert-dir: %w", err)
	}
	cfg.CertFiles = &agent.CertFiles{
		Cert: filepath.Join(certDir, "cert-chain.pem"),
		Key:  filepath.Join(certDir, "key.pem"),
		Root: filepath.Join(certDir, "root-cert.pem"),
	}
	cfg.Rotation = identity.RotationOptions{Fraction: ido.RotationFraction, Name: id.String(), Log: log}
	if ido.CADir != "" && ido.CAAddress != "" {
		return cfg, noop, errors.New("--ca-dir and --ca-address are mutually exclusive")
	}
	if ido.CADir != "" {
		ca, err := identity.LoadOrCreateCA(ido.CADir)
		if err != nil {
			return cfg, noop, fmt.Errorf("--ca-dir: %w", err)
		}
		cfg.Fetch = func(context.Context) (*tls.Certificate, *x509.CertPool, error) {
			c, err := ca.Issue(id, ido.CertLifetime)
			return c, ca.Roots(), err
		}
		return cfg, noop, nil
	}
	creds, err := ido.caCredentials()
	if err != nil {
		return cfg, noop, err
	}
	conn, err := grpc.NewClient(ido.CAAddress, grpc.WithTransportCredentials(creds))
	if err != nil {
		return cfg, noop, fmt.Errorf("--ca-address %q: %w", ido.CAAddress, err)
	}
	tokenFile := ido.CATokenFile
	if _, err := os.Stat(tokenFile); err != nil && tokenFile == defaultCATokenFile {
		tokenFile = "" // no projected token: a CA that needs none
	}
	client := identity.NewIstioCAClient(conn, tokenFile)
	cfg.Fetch = func(ctx context.Context) (*tls.Certificate, *x509.CertPool, error) {
		return client.Sign(ctx, id, ido.CertLifetime, false)
	}
	return cfg, func() { conn.Close() }, nil
}
