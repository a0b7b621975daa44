package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"strings"

	"github.com/meshlet/meshlet/dataplane"
	"github.com/meshlet/meshlet/identity"
)

// gatewayOptions are run's SNI gateway flags (krun's gateway role, Istio's
// AUTO_PASSTHROUGH gateway on 15443).
type gatewayOptions struct {
	Addr           string
	Hosts          map[string]string
	TerminateHBONE bool
}

func (o *gatewayOptions) register(fs *flag.FlagSet) {
	fs.Func("gateway", `serve the SNI gateway on this address ("on" means `+dataplane.DefaultGatewayAddr+`): TLS connections are routed by server name without being terminated; off by default`, func(s string) error {
		s = strings.TrimSpace(s)
		switch strings.ToLower(s) {
		case "on", "true":
			s = dataplane.DefaultGatewayAddr
		case "off", "false":
			s = ""
		}
		o.Addr = s
		return nil
	})
	fs.Func("gateway-host", "NAME=CLUSTER: route the plain server name NAME (or *.DOMAIN) through the gateway to CLUSTER (repeatable); outbound_.PORT_.SUBSET_.HOST names and names equal to a cluster's need none", func(s string) error {
		name, cluster, ok := strings.Cut(strings.TrimSpace(s), "=")
		name, cluster = strings.TrimSpace(name), strings.TrimSpace(cluster)
		if !ok || name == "" || cluster == "" {
			return fmt.Errorf("%q is not NAME=CLUSTER", s)
		}
		if o.Hosts == nil {
			o.Hosts = map[string]string{}
		}
		if prev, dup := o.Hosts[strings.ToLower(name)]; dup && prev != cluster {
			return fmt.Errorf("%q is already routed to %q", name, prev)
		}
		o.Hosts[strings.ToLower(name)] = cluster
		return nil
	})
	fs.BoolVar(&o.TerminateHBONE, "gateway-terminate-hbone", false, "terminate the mesh mTLS of gateway connections to HBONE clusters with the proxy identity and re-originate them over HBONE (default: pass the client's TLS through, inside the tunnel)")
}

// startGateway starts the gateway on p's data plane; nil when off. local
// is the proxy identity, needed to terminate.
//
// A non-nil inherited socket (from the process this one upgrades) is served
// instead of binding the address.
func startGateway(o *gatewayOptions, inherited *net.TCPListener, p *proxy, local identity.Source, log *slog.Logger) (*dataplane.Gateway, error) {
	if o.Addr == "" {
		if len(o.Hosts) > 0 || o.TerminateHBONE {
			return nil, errors.New("gateway: --gateway-host and --gateway-terminate-hbone need --gateway ADDR")
		}
		return nil, nil
	}
	opts := dataplane.GatewayOptions{Addr: o.Addr, Hosts: o.Hosts, Listener: inherited}
	if o.TerminateHBONE {
		if local == nil {
			return nil, errors.New("gateway: --gateway-terminate-hbone needs a proxy identity (--ca-dir, --ca-address or --cert-file)")
		}
		opts.Terminate = local
	}
	g, err := p.dp.StartGateway(opts)
	if err != nil {
		return nil, err
	}
	p.gateway.Store(g)
	log.Debug("sni gateway started", "addr", g.Addr().String())
	return g, nil
}

// stopGateway stops accepting at once and lets spliced connections finish
// alongside the listeners' drain, within ctx; the returned func waits for
// that.
func stopGateway(ctx context.Context, g *dataplane.Gateway) (wait func()) {
	if g == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.Close(ctx)
	}()
	return func() { <-done }
}
