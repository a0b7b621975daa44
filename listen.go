package meshlet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// ErrNoIdentity is returned by Listen on a Server without Identity.
var ErrNoIdentity = errors.New("meshlet: Listen needs an Identity")

// errListenerClosed is what Accept returns after Close.
var errListenerClosed = fmt.Errorf("meshlet: listener closed: %w", net.ErrClosed)

// handshakeTimeout bounds a client's TLS handshake: a silent client must
// not hold a goroutine and a socket forever.
const handshakeTimeout = 10 * time.Second

// Listen listens on addr and returns a net.Listener whose connections have
// completed mTLS with the workload identity (the client's certificate must
// chain to the identity's trust bundle) and passed the network RBAC
// filters of InboundListener under the configuration current at accept
// time. Accepted connections are *tls.Conn; ALPN offers h2 and http/1.1,
// so an http.Server can serve them. Denied and failed handshakes are
// closed without reaching Accept. Close of the Server closes the listener.
func (s *Server) Listen(network, addr string) (net.Listener, error) {
	rt, err := s.runtime()
	if err != nil {
		return nil, err
	}
	if rt.opts.Identity == nil {
		return nil, ErrNoIdentity
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil, fmt.Errorf("meshlet: %w", err)
	}
	cfg := serverTLS(rt.opts.Identity)
	l := &inboundListener{rt: rt, ln: ln, tls: cfg, conns: make(chan net.Conn), done: make(chan struct{})}
	rt.mu.Lock()
	rt.listeners[l] = struct{}{}
	rt.mu.Unlock()
	l.wg.Add(1)
	go l.acceptLoop()
	return l, nil
}

// serverTLS is Listen's mTLS configuration. ALPN offers h2 and http/1.1
// to HTTP clients. A client offering only other protocols (a meshlet or
// Envoy sidecar's cluster sends Istio's "istio-peer-exchange", "istio")
// negotiates none, as with Envoy; crypto/tls alone would fail that
// handshake.
func serverTLS(src identity.Source) *tls.Config {
	cfg := identity.ServerConfig(src, nil)
	cfg.NextProtos = []string{"h2", "http/1.1"}
	noALPN := cfg.Clone()
	noALPN.NextProtos = nil
	cfg.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		if len(hello.SupportedProtos) == 0 {
			return nil, nil
		}
		for _, p := range hello.SupportedProtos {
			if slices.Contains(cfg.NextProtos, p) {
				return nil, nil
			}
		}
		return noALPN, nil
	}
	return cfg
}

// inboundListener accepts in the background and hands over connections
// once they passed the handshake and RBAC, so one slow client does not
// hold up the others.
type inboundListener struct {
	rt    *runtime
	ln    net.Listener
	tls   *tls.Config
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	err   error // accept error, read after done
}

func (l *inboundListener) Addr() net.Addr { return l.ln.Addr() }

func (l *inboundListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		if l.err != nil {
			return nil, l.err
		}
		return nil, errListenerClosed
	}
}

func (l *inboundListener) Close() error {
	l.once.Do(func() { close(l.done) })
	err := l.ln.Close()
	l.rt.mu.Lock()
	delete(l.rt.listeners, l)
	l.rt.mu.Unlock()
	l.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

func (l *inboundListener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.done:
			default:
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				l.once.Do(func() {
					l.err = fmt.Errorf("meshlet: accept: %w", err)
					close(l.done)
				})
			}
			return
		}
		l.wg.Add(1)
		go l.admit(c)
	}
}

// admit runs the handshake and the RBAC check, then hands c to Accept.
func (l *inboundListener) admit(raw net.Conn) {
	defer l.wg.Done()
	ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { raw.Close() })
	go func() {
		// Close wins over a handshake in progress.
		select {
		case <-l.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	tc := tls.Server(raw, l.tls)
	err := tc.HandshakeContext(ctx)
	if err == nil && !l.allowed(tc) {
		err = errors.New("denied by RBAC")
	}
	if err != nil || !stop() {
		l.rt.log.Debug("inbound connection refused", "remote", raw.RemoteAddr().String(), "err", err)
		raw.Close()
		return
	}
	select {
	case l.conns <- tc:
	case <-l.done:
		tc.Close()
	}
}

// allowed evaluates InboundListener's network RBAC for an accepted mTLS
// connection.
func (l *inboundListener) allowed(tc *tls.Conn) bool {
	local, _ := netip.ParseAddrPort(tc.LocalAddr().String())
	remote, _ := netip.ParseAddrPort(tc.RemoteAddr().String())
	cs := tc.ConnectionState()
	in := policy.RBACInput{DirectRemote: remote, Remote: remote, Local: local, ServerName: cs.ServerName, TLS: true}
	if len(cs.PeerCertificates) > 0 {
		in.Peer = cs.PeerCertificates[0]
	}
	return l.rt.allowed(&in)
}

// allowed evaluates the network RBAC filters of the InboundListener chain
// for in's destination port under the current configuration; all must
// allow.
func (rt *runtime) allowed(in *policy.RBACInput) bool {
	name := rt.opts.InboundListener
	if name == "" {
		return true
	}
	lst := rt.store.Load().Listeners[name]
	if lst == nil {
		return false // named but absent: fail closed
	}
	chain := rbacChain(lst, uint32(in.Local.Port()))
	if chain == nil {
		return true
	}
	for _, f := range chain.RBAC {
		if !policy.EvalRBAC(f.Rules, in).Allowed {
			return false
		}
	}
	return true
}

// rbacChain is the chain of l for destination port: an exact port match,
// else the first chain without a port, else the default chain.
func rbacChain(l *state.Listener, port uint32) *state.FilterChain {
	for _, c := range l.FilterChains {
		if c.Match.DestinationPort == port {
			return c
		}
	}
	for _, c := range l.FilterChains {
		if c.Match.DestinationPort == 0 {
			return c
		}
	}
	return l.DefaultFilterChain
}
