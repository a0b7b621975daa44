package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/meshlet/meshlet/controlplane"
	"github.com/meshlet/meshlet/examples/demo"
	"github.com/meshlet/meshlet/internal/echo"
	"github.com/meshlet/meshlet/xds"
)

// demoListener is the listener name in examples/demo/listener.yaml.
const demoListener = "demo"

// demoTimeout bounds the whole demo; it normally takes a few seconds.
const demoTimeout = 25 * time.Second

func demoCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configDir := fs.String("config-dir", "", "serve and watch the resource files of this directory instead of the embedded examples/demo ones")
	requests := fs.Int("requests", 1000, "HTTP/1.1 requests per measured split")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error (logs go to stderr)")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "ztunnel demo: %v\n", err)
		return exitUsage
	}
	if *requests < 100 {
		fmt.Fprintln(stderr, "ztunnel demo: --requests must be at least 100")
		return exitUsage
	}
	ctx, cancel := context.WithTimeout(context.Background(), demoTimeout)
	defer cancel()
	d := &demoRun{out: stdout, requests: *requests, configDir: *configDir}
	failed, err := d.run(ctx, log)
	if err != nil {
		fmt.Fprintf(stderr, "ztunnel demo: %v\n", err)
		return exitFailure
	}
	if failed > 0 {
		return exitFailure
	}
	return exitOK
}

// demoRun holds one demo's moving parts.
type demoRun struct {
	out       io.Writer
	requests  int
	configDir string

	cp    *controlplane.Server
	proxy *proxy
	addr  string // the proxy listener's host:port

	mirror     *echo.Server // the third echo service, target of the mirror step
	v1HTTPPort int          // echo v1's HTTP port (behind the mTLS step's server proxy)
	faultyPort int          // the faulty service listener's port (fault steps)

	step, steps int // the step being shown, of how many
}

func (d *demoRun) say(format string, args ...any) { fmt.Fprintf(d.out, format+"\n", args...) }

// header starts the next step's output: "[i/n] title".
func (d *demoRun) header(format string, args ...any) {
	d.step++
	d.say("\n[%d/%d] %s", d.step, d.steps, fmt.Sprintf(format, args...))
}

// run sets up, drives traffic, tears down, and returns the number of failed
// requests.
func (d *demoRun) run(ctx context.Context, log *slog.Logger) (failed int, err error) {
	started := time.Now()
	d.say("meshlet demo: echo backends + embedded xDS control plane + proxy, all on loopback")

	var backends [2]*echo.Server
	for i, v := range []string{"v1", "v2"} {
		if backends[i], err = echo.Start(v); err != nil {
			return 0, err
		}
		defer backends[i].Close()
		d.say("  echo %s        http %-21s grpc %s", v, backends[i].HTTPAddr, backends[i].GRPCAddr)
	}
	d.v1HTTPPort = backends[0].HTTPAddr.Port
	if d.mirror, err = echo.Start("mirror"); err != nil {
		return 0, err
	}
	defer d.mirror.Close()
	d.say("  echo mirror    http %-21s (joins the mesh in the mirroring step)", d.mirror.HTTPAddr)
	if d.faultyPort, err = freeLoopbackPort(); err != nil {
		return 0, err
	}

	dir := d.configDir
	if dir == "" {
		if dir, err = copyEmbedded(); err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
	}
	port, err := listenerPort()
	if err != nil {
		return 0, err
	}
	vars := map[string]string{
		"LISTENER_PORT":     strconv.Itoa(port),
		"ECHO_V1_HTTP_PORT": strconv.Itoa(backends[0].HTTPAddr.Port),
		"ECHO_V2_HTTP_PORT": strconv.Itoa(backends[1].HTTPAddr.Port),
		"ECHO_V1_GRPC_PORT": strconv.Itoa(backends[0].GRPCAddr.Port),
		"ECHO_V2_GRPC_PORT": strconv.Itoa(backends[1].GRPCAddr.Port),
	}
	if d.cp, err = controlplane.New(dir, vars, log); err != nil {
		return 0, err
	}
	cpAddr, err := d.cp.Start("127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer d.cp.Stop()
	d.say("  control plane  ADS  %-21s files %s", cpAddr, dir)

	d.proxy, err = startProxy(proxyConfig{
		Node:         xds.Node{ID: "sidecar~127.0.0.1~demo.default~default.svc.cluster.local", Cluster: "demo.default"},
		ADSAddress:   cpAddr.String(),
		DrainTime:    2 * time.Second,
		AdminAddress: "127.0.0.1:0",
		DebugHeaders: true,
		Log:          log,
	})
	if err != nil {
		return 0, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = d.proxy.shutdown(sctx)
	}()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err = d.proxy.waitReady(rctx)
	cancel()
	if err != nil {
		return 0, err
	}
	a := d.proxy.listenerAddr(demoListener)
	if a == nil {
		return 0, fmt.Errorf("listener %q is not bound", demoListener)
	}
	d.addr = a.String()
	d.say("  proxy          http %-21s admin http://%s (ready after %v)",
		d.addr, d.proxy.admin.Addr(), time.Since(started).Round(time.Millisecond))

	steps := []func(context.Context) (int, error){d.stepHTTP1, d.stepH2C, d.stepGRPC, d.stepCanary, d.stepShift,
		d.stepFault, d.stepRetry, d.stepTimeout, d.stepMirror, d.stepMTLS}
	d.steps = len(steps)
	for _, step := range steps {
		n, err := step(ctx)
		failed += n
		if err != nil {
			d.say("failed requests: %d", failed)
			return failed, err
		}
	}
	d.say("")
	d.say("failed requests: %d", failed)
	d.say("demo finished in %v", time.Since(started).Round(time.Millisecond))
	return failed, nil
}

// copyEmbedded writes the embedded demo files to a fresh temp dir, so the
// control plane can watch them and the user can edit them while it runs.
func copyEmbedded() (string, error) {
	dir, err := os.MkdirTemp("", "meshlet-demo-")
	if err != nil {
		return "", err
	}
	err = fs.WalkDir(demo.Files, ".", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := demo.Files.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, path), b, 0o644)
	})
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("copy demo files: %w", err)
	}
	return dir, nil
}

// listenerPort returns 15001 when it is free, else a free ephemeral port.
// The port is released before the proxy binds it; losing that race makes
// the proxy report a bind error and the demo fail clearly.
func listenerPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:15001")
	if err != nil {
		if l, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return 0, fmt.Errorf("no free loopback port: %w", err)
		}
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}

// freeLoopbackPort returns an ephemeral loopback port that was free a
// moment ago (same race as listenerPort).
func freeLoopbackPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("no free loopback port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}
