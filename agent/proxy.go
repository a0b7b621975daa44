package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
)

// ProxyOptions configure the xDS proxy.
type ProxyOptions struct {
	// Listen is where applications connect: "unix:///abs/path" (or
	// "unix:relative/path") for a Unix socket, else a TCP host:port that
	// should be loopback (the local hop is plaintext).
	Listen string
	// Upstream is the control plane's gRPC target (host:port).
	Upstream string
	// UpstreamCreds secure the upstream connection; nil is plaintext.
	UpstreamCreds credentials.TransportCredentials
	// Backoff bounds the wait between upstream stream attempts.
	Backoff Backoff
	Log     *slog.Logger
}

// Backoff is an exponential delay between reconnect attempts, jittered
// down by up to half. Zero fields default to 100ms and 10s.
type Backoff struct {
	Base, Max time.Duration
}

func (b Backoff) delay(attempt int) time.Duration {
	base, ceil := b.Base, b.Max
	if base <= 0 {
		base = 100 * time.Millisecond
	}
	if ceil <= 0 {
		ceil = 10 * time.Second
	}
	ceil = max(ceil, base)
	d := base
	for i := 0; i < attempt && d < ceil; i++ {
		d *= 2
	}
	d = min(d, ceil)
	half := int64(d / 2)
	return time.Duration(half + rand.Int64N(half+1))
}

// Proxy is the agent's xDS proxy: an ADS server for local applications
// whose streams are forwarded, one upstream stream each, over a single
// gRPC connection to the control plane.
type Proxy struct {
	opts     ProxyOptions
	lis      net.Listener
	srv      *grpc.Server
	conn     *grpc.ClientConn
	ads      discoverygrpc.AggregatedDiscoveryServiceClient
	uri      string
	sockPath string

	appStreams atomic.Int64 // open application streams
	upStreams  atomic.Int64 // upstream streams opened, replays included
}

// NewProxy listens and starts serving. The upstream connection is made
// lazily, by the first application stream.
func NewProxy(o ProxyOptions) (*Proxy, error) {
	if o.Upstream == "" {
		return nil, errors.New("xds proxy: no upstream control plane address")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	p := &Proxy{opts: o}
	if err := p.listen(); err != nil {
		return nil, err
	}
	creds := o.UpstreamCreds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	bc := backoff.DefaultConfig
	bc.BaseDelay = o.Backoff.Base
	if bc.BaseDelay <= 0 {
		bc.BaseDelay = 100 * time.Millisecond
	}
	bc.MaxDelay = max(o.Backoff.Max, bc.BaseDelay)
	if o.Backoff.Max <= 0 {
		bc.MaxDelay = 10 * time.Second
	}
	conn, err := grpc.NewClient(o.Upstream, grpc.WithTransportCredentials(creds),
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: bc, MinConnectTimeout: 5 * time.Second}))
	if err != nil {
		p.lis.Close()
		return nil, fmt.Errorf("xds proxy: upstream %q: %w", o.Upstream, err)
	}
	p.conn = conn
	p.ads = discoverygrpc.NewAggregatedDiscoveryServiceClient(conn)
	p.srv = grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(p.srv, adsServer{p})
	go func() { _ = p.srv.Serve(p.lis) }()
	return p, nil
}

func (p *Proxy) listen() error {
	addr := p.opts.Listen
	if rest, ok := strings.CutPrefix(addr, "unix:"); ok {
		path := strings.TrimPrefix(rest, "//")
		abs, err := filepath.Abs(path)
		if err != nil {
			return fmt.Errorf("xds proxy: listen %q: %w", addr, err)
		}
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			return fmt.Errorf("xds proxy: listen %q: %w", addr, err)
		}
		// A socket left by a previous run would make bind fail; only a
		// socket is removed, never another kind of file.
		if fi, err := os.Lstat(abs); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(abs)
		}
		lis, err := net.Listen("unix", abs)
		if err != nil {
			return fmt.Errorf("xds proxy: listen %q: %w", addr, err)
		}
		// The application may run as another user (its own container):
		// like pilot-agent's socket, anyone who can reach the directory
		// may connect. Nothing secret is served; keys stay in files.
		if err := os.Chmod(abs, 0o666); err != nil {
			lis.Close()
			return fmt.Errorf("xds proxy: listen %q: %w", addr, err)
		}
		p.lis, p.uri, p.sockPath = lis, "unix://"+abs, abs
		return nil
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("xds proxy: listen %q: %w", addr, err)
	}
	if ap, ok := lis.Addr().(*net.TCPAddr); ok && !ap.IP.IsLoopback() {
		p.opts.Log.Warn("xds proxy listens beyond loopback; the local hop is plaintext", "address", lis.Addr().String())
	}
	p.lis, p.uri = lis, lis.Addr().String()
	return nil
}

// ServerURI is the address applications put in their bootstrap.
func (p *Proxy) ServerURI() string { return p.uri }

// AppStreams is the number of open application streams.
func (p *Proxy) AppStreams() int64 { return p.appStreams.Load() }

// UpstreamStreams counts upstream streams opened so far.
func (p *Proxy) UpstreamStreams() int64 { return p.upStreams.Load() }

// Close stops serving (ending application streams) and closes the
// upstream connection.
func (p *Proxy) Close() {
	p.srv.Stop()
	p.conn.Close()
	if p.sockPath != "" {
		_ = os.Remove(p.sockPath)
	}
}

// adsServer keeps the gRPC service methods off Proxy's exported API.
type adsServer struct{ p *Proxy }

func (s adsServer) StreamAggregatedResources(down grpc.BidiStreamingServer[discoverygrpc.DiscoveryRequest, discoverygrpc.DiscoveryResponse]) error {
	return forward(s.p, "sotw", down, func(ctx context.Context) (grpc.BidiStreamingClient[discoverygrpc.DiscoveryRequest, discoverygrpc.DiscoveryResponse], error) {
		return s.p.ads.StreamAggregatedResources(ctx)
	}, newSotwState())
}

func (s adsServer) DeltaAggregatedResources(down grpc.BidiStreamingServer[discoverygrpc.DeltaDiscoveryRequest, discoverygrpc.DeltaDiscoveryResponse]) error {
	return forward(s.p, "delta", down, func(ctx context.Context) (grpc.BidiStreamingClient[discoverygrpc.DeltaDiscoveryRequest, discoverygrpc.DeltaDiscoveryResponse], error) {
		return s.p.ads.DeltaAggregatedResources(ctx)
	}, newDeltaState())
}
