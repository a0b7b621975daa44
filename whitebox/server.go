package whitebox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"

	"github.com/meshlet/meshlet/state"
)

// DefaultAddr is Istio's port for the whitebox HTTP proxy.
const DefaultAddr = "127.0.0.1:15007"

// Dataplane serves connections as if captured to a destination.
// *dataplane.Server implements it.
type Dataplane interface {
	// HandleAs serves c until it ends and closes it, or returns an error
	// (no listener, shut down) and leaves c to the caller.
	HandleAs(c *net.TCPConn, pre []byte, remote, dst netip.AddrPort) error
	// Serves reports whether HandleAs would find a listener for dst.
	Serves(dst netip.AddrPort) bool
}

// Options configure a Server.
type Options struct {
	// Addr is the HTTP proxy's listen address; "" runs only the forwards.
	// It must be a loopback address: an open proxy into the mesh would
	// hand the workload's identity to anyone who can reach it.
	Addr string
	// Forwards are local listeners whose connections go to a fixed
	// destination.
	Forwards []Forward
	// Store is the mesh config names are resolved against.
	Store *state.Store
	// Dataplane serves the connections.
	Dataplane Dataplane
	// Lookup resolves names the mesh config does not know; default DNS.
	Lookup LookupFunc
	Log    *slog.Logger
}

// Server runs the whitebox HTTP proxy and port forwards.
type Server struct {
	opts Options
	log  *slog.Logger
	res  resolver

	proxyLn  net.Listener
	http     *http.Server
	tr       *http.Transport
	forwards []*forwarder

	// wg counts the forward accept loops. Connection goroutines are not
	// counted: once handed to the data plane they are its to drain
	// (dataplane.Server.Shutdown waits for them).
	wg        sync.WaitGroup
	closeOnce sync.Once
}

// Start binds the proxy and the forwards and starts serving. On error
// nothing stays open.
func Start(o Options) (_ *Server, err error) {
	if o.Store == nil || o.Dataplane == nil {
		return nil, errors.New("whitebox: Store and Dataplane are required")
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Lookup == nil {
		o.Lookup = defaultLookup
	}
	s := &Server{opts: o, log: o.Log, res: resolver{store: o.Store, lookup: o.Lookup}}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	for _, f := range o.Forwards {
		fw, err := s.startForward(f)
		if err != nil {
			return nil, err
		}
		s.forwards = append(s.forwards, fw)
	}
	if o.Addr != "" {
		ln, err := listenLoopback(o.Addr)
		if err != nil {
			return nil, fmt.Errorf("whitebox proxy: %w", err)
		}
		s.proxyLn = ln
		s.startProxy()
	}
	return s, nil
}

// listenLoopback binds addr after checking it is a loopback address.
func listenLoopback(addr string) (*net.TCPListener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, fmt.Errorf("listen address %q: want IP:PORT: %w", addr, err)
	}
	if !ap.Addr().IsLoopback() {
		return nil, fmt.Errorf("listen address %q: must be loopback", addr)
	}
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(ap))
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	return ln, nil
}

// Addr returns the HTTP proxy's bound address, or nil when it is off.
func (s *Server) Addr() net.Addr {
	if s.proxyLn == nil {
		return nil
	}
	return s.proxyLn.Addr()
}

// ForwardAddrs returns the bound address of each forward, in Options order.
func (s *Server) ForwardAddrs() []net.Addr {
	out := make([]net.Addr, len(s.forwards))
	for i, f := range s.forwards {
		out[i] = f.ln.Addr()
	}
	return out
}

// Close stops accepting, lets in-flight proxied requests finish (up to 5
// s) and closes idle proxy connections. Tunnels and forwarded connections
// already handed to the data plane are drained by its Shutdown, so call
// Close first.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		for _, f := range s.forwards {
			_ = f.ln.Close()
		}
		if s.http != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = s.http.Shutdown(ctx)
			cancel()
			_ = s.http.Close()
		}
		if s.tr != nil {
			s.tr.CloseIdleConnections()
		}
		s.wg.Wait()
	})
}
