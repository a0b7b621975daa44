package main

import (
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/meshlet/meshlet/whitebox"
)

// whiteboxOptions are run's whitebox-mode flags: an HTTP proxy for
// applications using HTTP_PROXY/HTTPS_PROXY and localhost port forwards,
// for places where traffic cannot be captured (no root, no iptables).
type whiteboxOptions struct {
	Addr     string
	Forwards []whitebox.Forward
}

func (o *whiteboxOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.Addr, "whitebox", "", "serve the whitebox HTTP proxy (HTTP_PROXY/HTTPS_PROXY: absolute-form requests and CONNECT) on this loopback address, e.g. "+whitebox.DefaultAddr+`; "" disables it`)
	fs.Func("forward", "LISTEN=HOST:PORT: a loopback port forward whose connections are routed as if captured to HOST:PORT, e.g. 127.0.0.1:9080=reviews.default.svc.cluster.local:9080 (repeatable)", func(s string) error {
		f, err := whitebox.ParseForward(strings.TrimSpace(s))
		if err != nil {
			return err
		}
		o.Forwards = append(o.Forwards, f)
		return nil
	})
}

func (o *whiteboxOptions) enabled() bool { return o != nil && (o.Addr != "" || len(o.Forwards) > 0) }

// startWhitebox starts whitebox mode on p's data plane; nil when off.
func startWhitebox(o *whiteboxOptions, p *proxy, log *slog.Logger) (*whitebox.Server, error) {
	if !o.enabled() {
		return nil, nil
	}
	s, err := whitebox.Start(whitebox.Options{
		Addr:      o.Addr,
		Forwards:  o.Forwards,
		Store:     p.store,
		Dataplane: p.dp,
		Log:       log,
	})
	if err != nil {
		return nil, fmt.Errorf("whitebox: %w", err)
	}
	return s, nil
}

// stopWhitebox stops accepting before the data plane drains what was
// handed to it.
func stopWhitebox(s *whitebox.Server) {
	if s != nil {
		s.Close()
	}
}
