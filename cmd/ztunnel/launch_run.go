package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/whitebox"
)

// Exit codes the launcher itself uses for the application, as shells do.
const (
	exitAppNotRunnable = 126
	exitAppNotFound    = 127
	exitSignalBase     = 128 // + signal number: the app (or we, before it ran) died of a signal
)

// forwardedSignals go to the application instead of stopping the proxy:
// the proxy outlives the app and stops when it exits.
var forwardedSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP}

// run waits until p is ready, runs the application and forwards signals
// to it until it exits, then closes exited and returns its exit code; run's
// usual shutdown drains the proxy and removes capture afterwards. Without
// an application it returns exitOK at once and exited stays open.
func (o *launchOptions) run(p *proxy, wb *whitebox.Server, local *localIdentity, log *slog.Logger, stderr io.Writer) int {
	if !o.launching() {
		return exitOK
	}
	o.done = make(chan struct{})
	defer close(o.done)
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwardedSignals...)
	defer signal.Stop(sigs)

	ctx, cancel := context.WithTimeout(context.Background(), o.readyTimeout)
	readyc := make(chan error, 1)
	go func() { readyc <- waitLaunchReady(ctx, p, local) }()
	select {
	case err := <-readyc:
		cancel()
		if err != nil {
			fmt.Fprintf(stderr, "ztunnel run: not starting %s: %v (after --ready-timeout %s)\n", o.app[0], err, o.readyTimeout)
			return exitFailure
		}
	case sig := <-sigs:
		cancel()
		<-readyc
		log.Info("signal before the app started; not starting it", "signal", sig.String())
		return exitSignalBase + signalNumber(sig)
	}

	cmd := exec.Command(o.app[0], o.app[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	proxyAddr := ""
	if wb != nil && wb.Addr() != nil {
		proxyAddr = wb.Addr().String()
	}
	cmd.Env = appEnv(os.Environ(), o.modeName(), proxyAddr)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(stderr, "ztunnel run: starting %s: %v\n", o.app[0], err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist) {
			return exitAppNotFound
		}
		return exitAppNotRunnable
	}
	log.Info("app started", "app", o.app[0], "pid", cmd.Process.Pid, "mode", o.modeName())
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait() // the exit status is in cmd.ProcessState
		close(done)
	}()
	quit := p.quitRequested()
	for {
		select {
		case sig := <-sigs:
			log.Info("forwarding signal to the app", "signal", sig.String(), "pid", cmd.Process.Pid)
			_ = cmd.Process.Signal(sig)
		case <-quit:
			// /quitquitquit stops the pod's proxy: the app goes first.
			quit = nil
			log.Info("quitquitquit; stopping the app", "pid", cmd.Process.Pid)
			_ = cmd.Process.Signal(syscall.SIGTERM)
		case <-done:
			code := exitCode(cmd.ProcessState)
			log.Info("app exited; draining", "code", code)
			return code
		}
	}
}

// exited is closed once run has returned for an application; nil (never
// ready in a select) without one.
func (o *launchOptions) exited() <-chan struct{} { return o.done }

// waitLaunchReady polls launchReady until it holds or ctx ends.
func waitLaunchReady(ctx context.Context, p *proxy, local *localIdentity) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		err := launchReady(p, local)
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

// exitCode is the application's exit status, 128+N when signal N killed it.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return exitSignalBase + int(ws.Signal())
	}
	return ps.ExitCode()
}

func signalNumber(s os.Signal) int {
	if n, ok := s.(syscall.Signal); ok {
		return int(n)
	}
	return 0
}

// markedXDSDialOptions makes the ADS connection carry the proxy mark too,
// so that capture does not send the proxy's own control-plane connection
// back through its outbound listener. nil (the xDS client's defaults) when
// marking is off or the address is not TCP.
func markedXDSDialOptions(address string, control func(network, address string, rc syscall.RawConn) error, mark uint32) []grpc.DialOption {
	if mark == 0 || control == nil || strings.HasPrefix(address, "unix:") {
		return nil
	}
	return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), markedDialer(control)}
}

// markedDialOptions marks the CA client's connection (it is dialed before
// the proxy and its Manager exist); nil when marking is off or the address
// is not TCP.
func markedDialOptions(address string, mark uint32, log *slog.Logger) []grpc.DialOption {
	control := upstream.MarkControl(mark, log)
	if control == nil || strings.HasPrefix(address, "unix:") {
		return nil
	}
	return []grpc.DialOption{markedDialer(control)}
}

// markedDialer dials TCP with control on the socket.
func markedDialer(control func(network, address string, rc syscall.RawConn) error) grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		d := net.Dialer{Control: control}
		return d.DialContext(ctx, "tcp", addr)
	})
}
