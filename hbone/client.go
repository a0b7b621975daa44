package hbone

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshlet/meshlet/identity"
)

// Key identifies a pooled tunnel connection, as ztunnel keys its pool: a
// connection carries streams of one source identity to one destination
// identity at one address. Because Dst is part of the key, a connection is
// never reused once the destination's expected identity changes.
type Key struct {
	// Src is the SPIFFE ID the client presents (selects the certificate).
	Src string
	// Dst is the SPIFFE ID the server must present; empty accepts any
	// identity the client's roots trust.
	Dst string
	// Addr is the tunnel endpoint, ip:15008.
	Addr string
	// Profile names the Profile a connection was made with when it is not
	// the client's default (for example the tunnel cluster of Istio's
	// configuration shape): connections are never shared across profiles.
	Profile string
}

func (k Key) String() string {
	if k.Profile != "" {
		return k.Src + "->" + k.Dst + "@" + k.Addr + "[" + k.Profile + "]"
	}
	return k.Src + "->" + k.Dst + "@" + k.Addr
}

// Profile overrides, for one dial, how a new tunnel connection is
// secured; the zero Profile uses the Client's Source and Key.Dst.
type Profile struct {
	// Source supplies the client certificate and roots.
	Source identity.Source
	// Verify, when set, checks the server's verified identity in addition
	// to Key.Dst (for example subject-alt-name matchers).
	Verify func(Peer) error
	// Headers are added to the CONNECT request.
	Headers http.Header
}

// Client dials HBONE streams over pooled mTLS HTTP/2 connections. Fields
// may be set until the first Dial.
type Client struct {
	// Source supplies the client certificate and roots for every key
	// unless SourceFor is set.
	Source identity.Source
	// SourceFor, when set, returns the certificate source for Key.Src
	// (a node proxy acting for many workloads).
	SourceFor func(src string) (identity.Source, error)
	// MaxStreamsPerConn opens another connection once this many streams are
	// open on each existing one (default 100; the server's
	// SETTINGS_MAX_CONCURRENT_STREAMS also caps it).
	MaxStreamsPerConn int
	// IdleTimeout closes a connection with no open stream (default 5m).
	IdleTimeout time.Duration
	// DialTimeout bounds TCP connect + TLS handshake (default 10s).
	DialTimeout time.Duration
	// DialContext opens the TCP connection (default net.Dialer).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	Log         *slog.Logger

	once sync.Once

	mu      sync.Mutex
	conns   map[Key][]*poolConn
	dialing map[Key]*dialCall
	closed  bool

	handshakes atomic.Int64
}

type dialCall struct {
	done chan struct{}
	err  error
}

// poolConn is one mTLS HTTP/2 connection; active and the idle timer are
// guarded by Client.mu.
type poolConn struct {
	key     Key
	mux     *mux
	tls     *tls.Conn
	active  int
	retired bool // no new streams: the destination identity changed
	idle    *time.Timer
	idleGen uint64
	closed  bool
}

// ErrClientClosed is returned by Dial after Close.
var ErrClientClosed = errors.New("hbone: client closed")

func (c *Client) init() {
	c.once.Do(func() {
		if c.Log == nil {
			c.Log = slog.Default()
		}
		if c.MaxStreamsPerConn <= 0 {
			c.MaxStreamsPerConn = 100
		}
		if c.IdleTimeout <= 0 {
			c.IdleTimeout = 5 * time.Minute
		}
		if c.DialTimeout <= 0 {
			c.DialTimeout = 10 * time.Second
		}
		c.conns = map[Key][]*poolConn{}
		c.dialing = map[Key]*dialCall{}
	})
}

// Handshakes is the number of TLS handshakes the client completed.
func (c *Client) Handshakes() int64 { return c.handshakes.Load() }

// Conns is the number of pooled connections open now.
func (c *Client) Conns() int {
	c.init()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, l := range c.conns {
		n += len(l)
	}
	return n
}

// Dial opens a tunneled TCP connection to target (ip:port) through the
// HBONE endpoint key.Addr. ctx bounds connection setup only; the returned
// conn lives until closed.
func (c *Client) Dial(ctx context.Context, key Key, target string, meta Meta) (net.Conn, error) {
	return c.DialProfile(ctx, key, Profile{}, target, meta)
}

// DialProfile is Dial with connection security from p (see Profile).
// target is the CONNECT :authority.
//
// A stream the server did not process (ErrStreamRefused: refused, above a
// GOAWAY's last-stream-id, or caught by its connection going away) is
// opened once more on another connection, a new one unless the pool has
// another usable connection for key.
func (c *Client) DialProfile(ctx context.Context, key Key, p Profile, target string, meta Meta) (net.Conn, error) {
	c.init()
	var avoid *poolConn
	for attempt := 0; ; attempt++ {
		pc, err := c.acquire(ctx, key, p, avoid)
		if err != nil {
			return nil, err
		}
		st, err := openStream(ctx, pc, target, meta, p.Headers)
		if err == nil {
			return &clientConn{stream: st, client: c, pc: pc}, nil
		}
		// A refused stream (an HTTP status, or REFUSED_STREAM) leaves the
		// connection as healthy as it was: a GOAWAY already stopped new
		// streams on it. Anything else may be the connection itself
		// failing; with TLS 1.3 a server that rejects our certificate says
		// so only after our handshake completed, on the first stream.
		// Never reuse it.
		var se *StatusError
		refused := errors.Is(err, ErrStreamRefused)
		if !errors.As(err, &se) && !refused {
			c.mu.Lock()
			pc.retired = true
			c.mu.Unlock()
		}
		c.release(pc)
		if !refused || attempt > 0 {
			return nil, fmt.Errorf("hbone %s: CONNECT %s: %w", key, target, err)
		}
		c.Log.Debug("hbone stream not processed, retrying on another connection", "key", key.String(), "target", target, "err", err)
		avoid = pc
	}
}

// acquire returns a connection for key with a stream slot reserved, never
// avoid.
func (c *Client) acquire(ctx context.Context, key Key, p Profile, avoid *poolConn) (*poolConn, error) {
	for {
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return nil, ErrClientClosed
		}
		if pc := c.pickLocked(key, avoid); pc != nil {
			c.mu.Unlock()
			return pc, nil
		}
		if call := c.dialing[key]; call != nil {
			// One dial per key at a time: concurrent first streams share it.
			c.mu.Unlock()
			select {
			case <-call.done:
				if call.err != nil {
					return nil, call.err
				}
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		call := &dialCall{done: make(chan struct{})}
		c.dialing[key] = call
		c.retireLocked(key)
		c.mu.Unlock()

		pc, err := c.dial(ctx, key, p)
		c.mu.Lock()
		delete(c.dialing, key)
		call.err = err
		close(call.done)
		if err == nil && c.closed {
			err = ErrClientClosed
			pc.mux.close(ErrClientClosed)
		}
		if err != nil {
			c.mu.Unlock()
			return nil, err
		}
		pc.active = 1
		c.conns[key] = append(c.conns[key], pc)
		c.mu.Unlock()
		return pc, nil
	}
}

// pickLocked reserves a slot on a usable connection other than avoid,
// dropping dead ones.
func (c *Client) pickLocked(key Key, avoid *poolConn) *poolConn {
	list := c.conns[key]
	var found *poolConn
	kept := list[:0]
	for _, pc := range list {
		// The peer's SETTINGS_MAX_CONCURRENT_STREAMS caps active too.
		usable := !pc.retired && pc.mux.canOpen(pc.active)
		if !usable && pc.active == 0 {
			c.closeLocked(pc)
			continue
		}
		kept = append(kept, pc)
		if found == nil && usable && pc != avoid && pc.active < c.MaxStreamsPerConn {
			found = pc
		}
	}
	c.setLocked(key, kept)
	if found != nil {
		found.active++
		if found.idle != nil {
			found.idle.Stop()
			found.idleGen++
		}
	}
	return found
}

// retireLocked stops new streams on connections to the same address and
// source whose destination identity differs from key's: the workload
// behind the address changed, so its old connections must not be reused.
// Idle ones close now, busy ones when their last stream ends.
func (c *Client) retireLocked(key Key) {
	for k, list := range c.conns {
		if k.Addr != key.Addr || k.Src != key.Src || k.Dst == key.Dst {
			continue
		}
		kept := list[:0]
		for _, pc := range list {
			pc.retired = true
			if pc.active == 0 {
				c.closeLocked(pc)
				continue
			}
			kept = append(kept, pc)
		}
		c.setLocked(k, kept)
	}
}

func (c *Client) setLocked(key Key, list []*poolConn) {
	if len(list) == 0 {
		delete(c.conns, key)
		return
	}
	c.conns[key] = list
}

func (c *Client) removeLocked(pc *poolConn) {
	list := c.conns[pc.key]
	for i, x := range list {
		if x == pc {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	c.setLocked(pc.key, list)
	c.closeLocked(pc)
}

func (c *Client) closeLocked(pc *poolConn) {
	if pc.closed {
		return
	}
	pc.closed = true
	if pc.idle != nil {
		pc.idle.Stop()
	}
	pc.mux.close(ErrClientClosed)
}

// release returns a stream slot; the last stream of a connection starts its
// idle timer, or closes it when it can take no more streams.
func (c *Client) release(pc *poolConn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pc.active--
	if pc.active > 0 || pc.closed {
		return
	}
	if pc.retired || c.closed || !pc.mux.alive() {
		c.removeLocked(pc)
		return
	}
	pc.idleGen++
	gen := pc.idleGen
	pc.idle = time.AfterFunc(c.IdleTimeout, func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if pc.active == 0 && pc.idleGen == gen {
			c.removeLocked(pc)
		}
	})
}

// dial opens and handshakes a new connection for key.
func (c *Client) dial(ctx context.Context, key Key, p Profile) (*poolConn, error) {
	src := c.Source
	if p.Source != nil {
		src = p.Source
	} else if c.SourceFor != nil {
		s, err := c.SourceFor(key.Src)
		if err != nil {
			return nil, fmt.Errorf("hbone %s: certificate source: %w", key, err)
		}
		src = s
	}
	if src == nil {
		return nil, fmt.Errorf("hbone %s: no certificate source", key)
	}
	ctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	dial := c.DialContext
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	raw, err := dial(ctx, "tcp", key.Addr)
	if err != nil {
		return nil, fmt.Errorf("hbone %s: connect: %w", key, err)
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	bc := newBufConn(raw)
	tc := tls.Client(bc, clientTLS(src, key.Dst, p.Verify))
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("hbone %s: tls: %w", key, err)
	}
	c.handshakes.Add(1)
	if p := tc.ConnectionState().NegotiatedProtocol; p != alpnH2 {
		raw.Close()
		return nil, fmt.Errorf("hbone %s: server did not negotiate h2 (alpn %q)", key, p)
	}
	bc.startBuffering()
	m := newMux(tc, bc, true)
	if err := m.start(); err != nil {
		raw.Close()
		return nil, fmt.Errorf("hbone %s: http2: %w", key, err)
	}
	return &poolConn{key: key, mux: m, tls: tc}, nil
}

// Close closes every pooled connection, ending their streams.
func (c *Client) Close() error {
	c.init()
	c.mu.Lock()
	c.closed = true
	var muxes []*mux
	for _, list := range c.conns {
		for _, pc := range list {
			c.closeLocked(pc)
			muxes = append(muxes, pc.mux)
		}
	}
	c.conns = map[Key][]*poolConn{}
	c.mu.Unlock()
	for _, m := range muxes {
		m.wait()
	}
	return nil
}
