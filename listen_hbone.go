package meshlet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/meshlet/meshlet/hbone"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/policy"
)

// ListenHBONE listens on addr for HBONE tunnels (HTTP/2 CONNECT inside
// mTLS, Istio ambient's port 15008) and returns a net.Listener whose Accept
// yields each tunneled connection as a net.Conn, so the application is the
// tunnel's destination with no proxy in between. Tunnel peers must present
// a certificate of the identity's trust domain that chains to its trust
// bundle. The network RBAC filters of InboundListener are applied to every
// stream, with the CONNECT target as destination and the forwarded client
// as source; a denied stream is answered 403 and never reaches Accept.
//
// Accepted connections report the CONNECT target (the address the client
// dialed) as LocalAddr and the original client (the Forwarded for=
// address when the peer sent one, else the peer's own address) as
// RemoteAddr; PeerIdentity gives the tunnel peer's SPIFFE ID. They
// half-close like TCP (CloseWrite). A stream not accepted within 10s is
// refused with 503. Close of the Server closes the listener.
func (s *Server) ListenHBONE(network, addr string) (net.Listener, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("meshlet: listen hbone %s %s: only tcp is supported", network, addr)
	}
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
	l := &hboneListener{rt: rt, ln: ln, conns: make(chan net.Conn), done: make(chan struct{}), served: make(chan struct{})}
	l.srv = &hbone.Server{Source: rt.opts.Identity, Log: rt.log, Dial: l.deliver}
	rt.mu.Lock()
	rt.listeners[l] = struct{}{}
	rt.mu.Unlock()
	go func() {
		defer close(l.served)
		if err := l.srv.Serve(ln); !errors.Is(err, hbone.ErrServerClosed) {
			l.once.Do(func() {
				l.err = fmt.Errorf("meshlet: hbone: %w", err)
				close(l.done)
			})
		}
	}()
	return l, nil
}

// hboneListener hands the streams of an hbone.Server to Accept: the
// server's Dial hook returns one end of an in-memory pipe and Accept the
// other, so the server's relay (flow control, half-close, resets) is used
// as it is for the proxy's inbound.
type hboneListener struct {
	rt     *runtime
	ln     net.Listener
	srv    *hbone.Server
	conns  chan net.Conn
	done   chan struct{}
	served chan struct{}
	once   sync.Once
	err    error // Serve's failure, read after done
}

func (l *hboneListener) Addr() net.Addr { return l.ln.Addr() }

func (l *hboneListener) Accept() (net.Conn, error) {
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

// Close stops accepting and ends every tunnel, including the connections
// already accepted.
func (l *hboneListener) Close() error {
	l.once.Do(func() { close(l.done) })
	_ = l.srv.Close()
	<-l.served
	l.rt.mu.Lock()
	delete(l.rt.listeners, l)
	l.rt.mu.Unlock()
	return nil
}

// deliver is the hbone.Server Dial hook: RBAC, then a rendezvous with
// Accept bounded by the server's connect timeout (ctx).
func (l *hboneListener) deliver(ctx context.Context, r *hbone.Request) (net.Conn, error) {
	direct, _ := netip.ParseAddrPort(r.RemoteAddr)
	direct = netip.AddrPortFrom(direct.Addr().Unmap(), direct.Port())
	remote := direct
	if r.Meta.ForwardedFor.IsValid() {
		// The peer speaks for its client, whose port it does not forward.
		remote = netip.AddrPortFrom(r.Meta.ForwardedFor.Unmap(), 0)
	}
	in := policy.RBACInput{DirectRemote: direct, Remote: remote, Local: r.Target, TLS: true}
	if len(r.Peer.Chain) > 0 {
		in.Peer = r.Peer.Chain[0]
	}
	if !l.rt.allowed(&in) {
		return nil, fmt.Errorf("%w: %s from %s denied by RBAC", hbone.ErrTargetDenied, r.Target, r.Peer.ID)
	}
	app, relay := newTunnelPipe(net.TCPAddrFromAddrPort(r.Target), net.TCPAddrFromAddrPort(remote))
	app.peer = r.Peer
	select {
	case l.conns <- app:
		return relay, nil
	case <-ctx.Done():
		app.Close()
		relay.Close()
		return nil, fmt.Errorf("meshlet: hbone stream to %s: not accepted in time: %w", r.Target, context.Cause(ctx))
	case <-l.done:
		app.Close()
		relay.Close()
		return nil, errListenerClosed
	}
}

// tunnelConn is one end of a full-duplex in-memory pipe that half-closes:
// each direction is its own net.Pipe, so CloseWrite ends one direction
// (the other end reads EOF) while the other keeps flowing. net.Pipe
// provides the deadlines.
type tunnelConn struct {
	r, w          net.Conn // read from r, write to w
	local, remote net.Addr
	peer          hbone.Peer // set on the application's end
}

func newTunnelPipe(local, remote net.Addr) (app, relay *tunnelConn) {
	appR, relayW := net.Pipe()
	relayR, appW := net.Pipe()
	app = &tunnelConn{r: appR, w: appW, local: local, remote: remote}
	relay = &tunnelConn{r: relayR, w: relayW, local: remote, remote: local}
	return app, relay
}

func (c *tunnelConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *tunnelConn) Write(p []byte) (int, error) { return c.w.Write(p) }

// CloseWrite ends this side's direction: the other side reads EOF.
func (c *tunnelConn) CloseWrite() error { return c.w.Close() }

func (c *tunnelConn) Close() error {
	c.w.Close()
	return c.r.Close()
}

func (c *tunnelConn) LocalAddr() net.Addr  { return c.local }
func (c *tunnelConn) RemoteAddr() net.Addr { return c.remote }

func (c *tunnelConn) SetDeadline(t time.Time) error {
	return errors.Join(c.r.SetReadDeadline(t), c.w.SetWriteDeadline(t))
}
func (c *tunnelConn) SetReadDeadline(t time.Time) error  { return c.r.SetReadDeadline(t) }
func (c *tunnelConn) SetWriteDeadline(t time.Time) error { return c.w.SetWriteDeadline(t) }

// PeerIdentity returns the SPIFFE ID of the authenticated peer of a
// connection from Listen or ListenHBONE (the tunnel peer, which for a
// proxy is the proxy's identity), or of the server of a Dial connection
// that used TLS. It fails for any other connection.
func PeerIdentity(c net.Conn) (identity.ID, error) {
	switch c := c.(type) {
	case *tunnelConn:
		if c.peer.ID == "" {
			return identity.ID{}, fmt.Errorf("meshlet: peer identity: %w", identity.ErrNoID)
		}
		return identity.Parse(c.peer.ID)
	case *meshConn:
		return PeerIdentity(c.Conn)
	case *tls.Conn:
		return identity.PeerID(c.ConnectionState())
	}
	return identity.ID{}, fmt.Errorf("meshlet: peer identity: %T is not a mesh connection", c)
}
