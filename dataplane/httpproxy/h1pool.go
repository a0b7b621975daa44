package httpproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/meshlet/meshlet/dataplane/upstream"
)

// Upstream HTTP/1.1 connections are pooled per endpoint: one keep-alive
// connection carries one request at a time and goes back to the pool when
// its response has been read to the end.

const (
	// maxIdleH1 bounds the idle connections kept per endpoint: Envoy's
	// default circuit-breaker max_connections, so a burst the breaker
	// admits does not end with connections closed on return and dialled
	// again (at 256, h2load's 512 concurrent streams to one HTTP/1.1
	// backend reconnected about once per 200 requests).
	maxIdleH1 = 1024
	// upstreamBufSize is each pooled connection's read and write buffer.
	upstreamBufSize = 8 << 10
)

// upBufs holds the read and write buffers of upstream connections. An idle
// pooled connection gives its buffers back, so hundreds of idle keep-alive
// connections left by a burst cost sockets, not 16 KB of memory each.
var upBufs = sync.Pool{New: func() any { return new([upstreamBufSize]byte) }}

func getUpBuf() []byte { return upBufs.Get().(*[upstreamBufSize]byte)[:] }

func putUpBuf(b []byte) {
	if cap(b) == upstreamBufSize {
		upBufs.Put((*[upstreamBufSize]byte)(b[:upstreamBufSize]))
	}
}

// attachBufs gives c buffers from upBufs; detachBufs returns them. Only a
// connection with nothing buffered in either direction may detach.
func (c *h1UpConn) attachBufs() {
	if c.br.buf == nil {
		c.br.buf = getUpBuf()
	}
	if c.bw.buf == nil {
		c.bw.buf = getUpBuf()[:0]
	}
	c.br.reset(c.conn, upstreamBufSize)
	c.bw.reset(c.conn, upstreamBufSize)
}

func (c *h1UpConn) detachBufs() {
	putUpBuf(c.br.buf)
	putUpBuf(c.bw.buf)
	c.br.buf, c.bw.buf = nil, nil
}

// errPendingOverflow: the cluster's max_pending_requests is reached.
var errPendingOverflow = errors.New("circuit breaker: too many pending requests")

// h1UpConn is one upstream HTTP/1.1 connection.
type h1UpConn struct {
	conn  net.Conn
	br    h1Reader
	bw    h1Writer
	reqs  uint32
	idle  time.Time // when it went back to the pool
	reuse bool      // taken from the pool (a stale close is then retryable)
	// expires is when the cluster's max_connection_duration retires the
	// connection (zero: never): it is not checked out after that, and is
	// closed instead of pooled when its request in flight ends.
	expires time.Time
}

// h1Pool is the io.Closer kept in an upstream.Endpoint's PoolHTTP1 slot.
type h1Pool struct {
	ep *upstream.Endpoint

	mu     sync.Mutex
	idle   []*h1UpConn // LIFO: the most recently used is the least likely stale
	closed bool
}

func newH1Pool(ep *upstream.Endpoint) io.Closer { return &h1Pool{ep: ep} }

// h1PoolOf returns the endpoint's HTTP/1.1 pool.
func h1PoolOf(ep *upstream.Endpoint) *h1Pool {
	return ep.Pool(upstream.PoolHTTP1, newH1Pool).(*h1Pool)
}

// Close closes idle connections. Connections in use finish their request
// and are then closed instead of pooled.
func (p *h1Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, c := range idle {
		c.conn.Close()
	}
	return nil
}

func (p *h1Pool) idleTimeout() time.Duration {
	if t := p.ep.Cluster.Spec().UpstreamIdleTimeout; t > 0 {
		return t
	}
	return time.Hour
}

// get returns an idle connection or dials a new one. fresh forces a dial.
func (p *h1Pool) get(ctx context.Context, fresh bool) (*h1UpConn, error) {
	if !fresh {
		var now time.Time
		p.mu.Lock()
		for n := len(p.idle); n > 0; n = len(p.idle) {
			c := p.idle[n-1]
			p.idle[n-1] = nil
			p.idle = p.idle[:n-1]
			if now.IsZero() {
				now = time.Now()
			}
			if now.Sub(c.idle) < p.idleTimeout() && (c.expires.IsZero() || now.Before(c.expires)) {
				p.mu.Unlock()
				c.reuse = true
				c.attachBufs()
				return c, nil
			}
			c.conn.Close()
		}
		p.mu.Unlock()
	}
	// A request waiting for a new connection is a pending request for the
	// circuit breaker (max_pending_requests).
	release, ok := p.ep.Cluster.Acquire(upstream.ResourcePendingRequests)
	if !ok {
		return nil, errPendingOverflow
	}
	conn, err := p.ep.Dial(ctx) // with its auto_sni name
	release()
	if err != nil {
		return nil, err
	}
	c := &h1UpConn{conn: conn}
	if d := p.ep.Cluster.Spec().UpstreamMaxConnectionDuration; d > 0 {
		c.expires = time.Now().Add(d)
	}
	c.attachBufs()
	return c, nil
}

// put returns c to the pool when it may carry another request.
func (p *h1Pool) put(c *h1UpConn) {
	spec := p.ep.Cluster.Spec()
	c.reqs++
	now := time.Now()
	if c.br.buffered() > 0 || len(c.bw.buf) > 0 || c.bw.err != nil ||
		(spec.MaxRequestsPerConnection > 0 && c.reqs >= spec.MaxRequestsPerConnection) ||
		(!c.expires.IsZero() && !now.Before(c.expires)) {
		c.conn.Close()
		return
	}
	c.br.onFill = nil
	c.idle = now
	c.reuse = false
	c.detachBufs()
	// Whoever used c may have left a read or write deadline on it (the
	// response-head wait sets short ones); an idle connection has none, so
	// the next user starts clean.
	_ = c.conn.SetDeadline(time.Time{})
	p.mu.Lock()
	if p.closed || len(p.idle) >= maxIdleH1 {
		p.mu.Unlock()
		c.conn.Close()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}
