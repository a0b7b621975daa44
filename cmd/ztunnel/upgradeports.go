package main

import (
	"fmt"
	"net"
	"os"
)

// The admin and metrics ports travel with the listeners in an upgrade:
// both processes bind the same configured addresses, so without the
// handoff the successor could not bind them while its predecessor drains.
// Their keys cannot collide with a data-plane listener's
// (dataplane.HandoffKey is NAME@ADDR and a listener always has a name).
const (
	handoffAdminKey   = "@admin"
	handoffMetricsKey = "@metrics"
	handoffStatusKey  = "@status"
	handoffGatewayKey = "@gateway"
)

// addPortFiles duplicates the admin and metrics sockets into files.
func (p *proxy) addPortFiles(files map[string]*os.File) error {
	if p.admin != nil {
		f, err := p.admin.ListenerFile()
		if err != nil {
			return err
		}
		files[handoffAdminKey] = f
	}
	if p.metrics != nil {
		tl, ok := p.metrics.ln.(*net.TCPListener)
		if !ok {
			return fmt.Errorf("metrics: listener %T cannot be handed off", p.metrics.ln)
		}
		f, err := tl.File()
		if err != nil {
			return fmt.Errorf("metrics: dup socket: %w", err)
		}
		files[handoffMetricsKey] = f
	}
	if lp := p.statusLn.Load(); lp != nil {
		tl, ok := (*lp).(*net.TCPListener)
		if !ok {
			return fmt.Errorf("status: listener %T cannot be handed off", *lp)
		}
		f, err := tl.File()
		if err != nil {
			return fmt.Errorf("status: dup socket: %w", err)
		}
		files[handoffStatusKey] = f
	}
	if g := p.gateway.Load(); g != nil {
		f, err := g.ListenerFile()
		if err != nil {
			return fmt.Errorf("gateway: dup socket: %w", err)
		}
		files[handoffGatewayKey] = f
	}
	return nil
}

// inheritedPorts are the predecessor's readiness and gateway sockets.
type inheritedPorts struct {
	status  net.Listener
	gateway *net.TCPListener
}

// takePortListeners moves the inherited admin and metrics sockets out of
// inherited into cfg, and returns the readiness and gateway ones, each only
// if it is bound to the address this process is configured with (otherwise
// it is closed and the address bound anew).
func takePortListeners(inherited map[string]*net.TCPListener, cfg *proxyConfig, statusAddr, gatewayAddr string) inheritedPorts {
	take := func(key, want string) *net.TCPListener {
		ln := inherited[key]
		if ln == nil {
			return nil
		}
		delete(inherited, key)
		if !sameTCPAddr(want, ln.Addr()) {
			_ = ln.Close()
			return nil
		}
		return ln
	}
	// A nil *net.TCPListener must become a nil interface, not a non-nil
	// net.Listener holding nil.
	asListener := func(ln *net.TCPListener) net.Listener {
		if ln == nil {
			return nil
		}
		return ln
	}
	cfg.InheritedAdmin = asListener(take(handoffAdminKey, cfg.AdminAddress))
	cfg.InheritedMetrics = asListener(take(handoffMetricsKey, cfg.MetricsAddress))
	return inheritedPorts{
		status:  asListener(take(handoffStatusKey, statusAddr)),
		gateway: take(handoffGatewayKey, gatewayAddr),
	}
}

// sameTCPAddr reports whether got is bound where want (a configured
// host:port, possibly with an empty or unspecified host) would bind.
func sameTCPAddr(want string, got net.Addr) bool {
	if want == "" {
		return false
	}
	w, err := net.ResolveTCPAddr("tcp", want)
	if err != nil {
		return false
	}
	g, ok := got.(*net.TCPAddr)
	if !ok || w.Port != g.Port {
		return false
	}
	if len(w.IP) == 0 || w.IP.IsUnspecified() {
		return len(g.IP) == 0 || g.IP.IsUnspecified()
	}
	return w.IP.Equal(g.IP)
}
