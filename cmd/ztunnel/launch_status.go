package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// defaultStatusAddress is Istio's readiness port (15021). The admin API is
// loopback only, but the kubelet probes the pod's IP, so readiness is served
// on its own all-address listener with nothing else on it.
const defaultStatusAddress = ":15021"

// startStatus serves GET /healthz/ready (200 once the proxy is ready and has
// its certificate, 503 with the reason before, and while draining) on addr;
// "" serves nothing. The returned func stops it; it is never nil.
// A non-nil inherited socket (from the process this one upgrades) is served
// instead of binding addr.
func startStatus(addr string, inherited net.Listener, p *proxy, local *localIdentity, log *slog.Logger) (func(), error) {
	if addr == "" {
		if inherited != nil {
			_ = inherited.Close()
		}
		return func() {}, nil
	}
	ln := inherited
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", addr); err != nil {
			return func() {}, fmt.Errorf("status %s: %w", addr, err)
		}
	}
	p.statusLn.Store(&ln)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz/ready", func(w http.ResponseWriter, _ *http.Request) {
		if err := launchReady(p, local); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = fmt.Fprintln(w, "ready")
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("status server stopped", "err", err)
		}
	}()
	log.Info("status listening", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// launchReady is the proxy's readiness plus, when it has an identity, a
// certificate in hand: what the launcher waits for and the probe reports.
func launchReady(p *proxy, local *localIdentity) error {
	if err := p.ready(); err != nil {
		return err
	}
	if local != nil && local.src != nil {
		if _, err := local.src.Certificate(); err != nil {
			return fmt.Errorf("no workload certificate: %w", err)
		}
	}
	return nil
}
