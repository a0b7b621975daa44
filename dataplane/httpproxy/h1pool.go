package httpproxy

import (
	"context"
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
	// maxIdleH1 bounds the idle connections kept per endpoint.
	maxIdleH1 = 256
	// upstreamBufSize is each pooled connection's read and write buffer.
	upstreamBufSize = 8 << 10
)

// h1UpConn is one upstream HTTP/1.1 connection.
type h1UpConn struct {
	conn  net.Conn
	br    h1Reader
	bw    h1Writer
	reqs  uint32
	idle  time.Time // when it went back to the pool
	reuse bool      // taken from the pool (a stale close is then retryable)
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
			if now.Sub(c.idle) < p.idleTimeout() {
				p.mu.Unlock()
				c.reuse = true
				return c, nil
			}
			c.conn.Close()
		}
		p.mu.Unlock()
	}
	conn, err := p.ep.Cluster.Dial(ctx, p.ep.Host)
	if err != nil {
		return nil, err
	}
	c := &h1UpConn{conn: conn}
	c.br.reset(conn, upstreamBufSize)
	c.bw.reset(conn, upstreamBufSize)
	return c, nil
}

// put returns c to the pool when it may carry another request.
func (p *h1Pool) put(c *h1UpConn) {
	spec := p.ep.Cluster.Spec()
	c.reqs++
	if c.br.buffered() > 0 || c.bw.err != nil ||
		(spec.MaxRequestsPerConnection > 0 && c.reqs >= spec.MaxRequestsPerConnection) {
		c.conn.Close()
		return
	}
	c.br.onFill = nil
	c.idle = time.Now()
	c.reuse = false
	p.mu.Lock()
	if p.closed || len(p.idle) >= maxIdleH1 {
		p.mu.Unlock()
		c.conn.Close()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}
