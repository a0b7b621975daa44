package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/xds"
)

// Config configures an Agent.
type Config struct {
	// BootstrapPath is where the gRFC A27 bootstrap is written.
	BootstrapPath string
	// Listen and Upstream are the xDS proxy's ProxyOptions.
	Listen, Upstream string
	// UpstreamTLS secures the upstream connection; nil is plaintext.
	UpstreamTLS *UpstreamTLS
	Node        xds.Node
	// CertFiles are the workload certificate files the bootstrap names.
	// With Fetch the agent writes and renews them; without it they are
	// someone else's (a mounted secret, another agent) and the bootstrap
	// points at them as they are; with neither, the bootstrap has no
	// certificate provider and xDS security cannot be used.
	CertFiles *CertFiles
	Fetch     identity.FetchFunc
	Rotation  identity.RotationOptions
	// Refresh is the file_watcher refresh interval.
	Refresh time.Duration
	// ServerListenerTemplate and ClientListenerTemplate go to the
	// bootstrap as they are (see BootstrapOptions).
	ServerListenerTemplate, ClientListenerTemplate string
	Backoff                                        Backoff
	Log                                            *slog.Logger
}

// UpstreamTLS configures TLS towards the control plane.
type UpstreamTLS = identity.ControlPlaneTLS

// Agent is a running proxyless gRPC agent: certificate files, xDS proxy
// and bootstrap, in the order an application needs them.
type Agent struct {
	Proxy *Proxy
	// Certs is nil unless the agent writes the certificate files.
	Certs *CertWriter
	close []func()
}

// Start writes the certificate files (when it owns them), starts the xDS
// proxy, then writes the bootstrap: once Start returns, an application
// started with GRPC_XDS_BOOTSTRAP=cfg.BootstrapPath finds everything it
// names.
func Start(ctx context.Context, cfg Config) (*Agent, error) {
	if cfg.BootstrapPath == "" {
		return nil, errors.New("agent: no bootstrap path")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	a := &Agent{}
	ok := false
	defer func() {
		if !ok {
			a.Close()
		}
	}()
	var src identity.Source
	if cfg.Fetch != nil {
		if cfg.CertFiles == nil {
			return nil, errors.New("agent: a certificate source needs the certificate file paths")
		}
		if cfg.Rotation.Log == nil {
			cfg.Rotation.Log = cfg.Log
		}
		w, err := StartCertWriter(ctx, CertWriterOptions{Files: *cfg.CertFiles, Fetch: cfg.Fetch, Rotation: cfg.Rotation})
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.Certs = w
		a.close = append(a.close, w.Close)
		src = w.Source()
	} else if cfg.CertFiles != nil && cfg.UpstreamTLS != nil && (cfg.UpstreamTLS.ClientCert || cfg.UpstreamTLS.Roots == nil) {
		// The agent reads files someone else renews only when it needs
		// them itself, and then rarely: grpc's file_watcher is what
		// keeps the application current.
		fs, err := identity.NewFileSource(identity.FileOptions{
			CertFile: cfg.CertFiles.Cert, KeyFile: cfg.CertFiles.Key, RootsFile: cfg.CertFiles.Root,
			Poll: time.Minute, Log: cfg.Log,
		})
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		a.close = append(a.close, fs.Close)
		src = fs
	}
	var creds credentials.TransportCredentials
	if cfg.UpstreamTLS != nil {
		tc, err := identity.ControlPlaneConfig(cfg.Upstream, *cfg.UpstreamTLS, src)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		creds = credentials.NewTLS(tc)
	}
	p, err := NewProxy(ProxyOptions{Listen: cfg.Listen, Upstream: cfg.Upstream, UpstreamCreds: creds, Backoff: cfg.Backoff, Log: cfg.Log})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.Proxy = p
	a.close = append(a.close, p.Close)
	if err := WriteBootstrap(cfg.BootstrapPath, BootstrapOptions{
		ServerURI: p.ServerURI(), Node: cfg.Node, Certs: cfg.CertFiles, Refresh: cfg.Refresh,
		ServerListenerTemplate: cfg.ServerListenerTemplate, ClientListenerTemplate: cfg.ClientListenerTemplate,
	}); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	ok = true
	return a, nil
}

// Close stops the proxy and the renewals, newest first. Files stay.
func (a *Agent) Close() {
	for i := len(a.close) - 1; i >= 0; i-- {
		a.close[i]()
	}
	a.close = nil
}
