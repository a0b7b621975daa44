package httpproxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/meshlet/meshlet/dataplane/upstream"
)

// errH2NoCapacity is returned when repeated dials could not produce a
// connection that accepts another stream (a peer advertising
// SETTINGS_MAX_CONCURRENT_STREAMS 0, or one closing every connection).
var errH2NoCapacity = errors.New("http2 pool: no connection accepts a new stream")

// h2ConnectError marks a failure to open an upstream HTTP/2 connection: the
// response flag is UF, not UR/UC, because nothing was sent.
type h2ConnectError struct{ err error }

func (e *h2ConnectError) Error() string { return e.err.Error() }
func (e *h2ConnectError) Unwrap() error { return e.err }

// isUpstreamConnectError reports whether err (from roundTripH2) means the
// upstream connection could not be established (Envoy flag UF).
func isUpstreamConnectError(err error) bool {
	var ce *h2ConnectError
	return errors.As(err, &ce)
}

// h2ClientConn is what the pool needs of an upstream HTTP/2 connection:
// the method set of x/net's *http2.ClientConn (State apart), implemented
// by our own h2cliConn (h2cliconn.go).
type h2ClientConn interface {
	RoundTrip(*http.Request) (*http.Response, error)
	ReserveNewRequest() bool
	CanTakeNewRequest() bool
	SetDoNotReuse()
	State() h2ConnState
	Ping(context.Context) error
	Close() error
}

// h2Pool is the HTTP/2 connection pool of one upstream endpoint, kept in
// the endpoint's upstream.PoolHTTP2 slot. Streams go to the first
// connection under both the cluster's cap and the peer's SETTINGS limit;
// when none is, one more connection is dialled and requests arriving while
// it dials wait for it instead of each dialling their own.
type h2Pool struct {
	ep  *upstream.Endpoint
	cfg h2cConfig
	// streamCap is the cluster's max_concurrent_streams (0 = peer's limit
	// only); maxRequests its max_requests_per_connection (0 = unlimited).
	streamCap   int
	maxRequests int
	// maxAge is the cluster's max_connection_duration (0 = none): an older
	// connection takes no new streams and closes when its streams end. A
	// timer per connection retires it (expire), so requests pay nothing.
	maxAge time.Duration

	mu    sync.Mutex
	conns []*h2Conn
	// peerLimit is the SETTINGS_MAX_CONCURRENT_STREAMS the peer last
	// advertised (100 until known, x/net's own assumption); it bounds how
	// many callers wait on one dial when the cluster sets no cap.
	peerLimit int
	closed    bool
}

// h2Conn is one pooled upstream connection, or one being dialled.
type h2Conn struct {
	ready chan struct{} // closed when the dial ends; cc/err are set before
	cc    h2ClientConn
	err   error

	// Guarded by the pool's mu. streams counts the streams we placed on the
	// connection (including callers waiting for the dial); requests counts
	// every stream ever placed; retired means the pool no longer hands the
	// connection out and closes it when streams drops to zero.
	streams  int
	requests int
	retired  bool
}

func newH2Pool(ep *upstream.Endpoint) *h2Pool {
	spec := ep.Cluster.Spec()
	idle := spec.UpstreamIdleTimeout
	if idle <= 0 {
		idle = time.Hour // Envoy's default upstream idle_timeout
	}
	return &h2Pool{
		ep: ep,
		cfg: h2cConfig{
			idleTimeout: idle,
			// Detect dead peers on long-lived (gRPC streaming) connections.
			readIdle:    60 * time.Second,
			pingTimeout: 15 * time.Second,
		},
		streamCap:   int(spec.HTTP2MaxConcurrentStreams),
		maxRequests: int(spec.MaxRequestsPerConnection),
		maxAge:      spec.UpstreamMaxConnectionDuration,
		peerLimit:   100,
	}
}

// h2PoolOf returns the endpoint's HTTP/2 pool, creating it on first use.
func h2PoolOf(ep *upstream.Endpoint) *h2Pool {
	return ep.Pool(upstream.PoolHTTP2, func(ep *upstream.Endpoint) io.Closer { return newH2Pool(ep) }).(*h2Pool)
}

// underCapLocked reports whether the cluster's cap allows another stream on c.
func (p *h2Pool) underCapLocked(c *h2Conn) bool {
	return p.streamCap <= 0 || c.streams < p.streamCap
}

// joinableLocked reports whether one more caller may wait on c's dial:
// no more than the connection is expected to carry.
func (p *h2Pool) joinableLocked(c *h2Conn) bool {
	limit := p.peerLimit
	if p.streamCap > 0 && p.streamCap < limit {
		limit = p.streamCap
	}
	return c.streams < limit
}

// acquire returns a connection with one stream reserved for the caller,
// who must call release once the stream is over.
func (p *h2Pool) acquire(ctx context.Context) (*h2Conn, error) {
	// Each round either reserves a stream or dials a connection; a few
	// rounds cover a peer whose SETTINGS turn out lower than the waiters
	// that joined its dial.
	for range 16 {
		c, err := p.pickOrDial(ctx)
		if err != nil {
			return nil, err
		}
		if c.cc.ReserveNewRequest() {
			p.mu.Lock()
			c.requests++
			if p.maxRequests > 0 && c.requests >= p.maxRequests && !c.retired {
				// Last stream this connection may carry.
				c.retired = true
				c.cc.SetDoNotReuse()
				p.removeLocked(c)
			}
			p.mu.Unlock()
			return c, nil
		}
		p.release(c)
	}
	return nil, errH2NoCapacity
}

// pickOrDial returns a ready connection with c.streams already counting the
// caller. The caller still has to reserve a stream on c.cc.
func (p *h2Pool) pickOrDial(ctx context.Context) (*h2Conn, error) {
	var dead []h2ClientConn
	defer func() {
		for _, cc := range dead {
			cc.Close() // already closing; closed outside mu
		}
	}()
	p.mu.Lock()
	var pending *h2Conn
	if p.closed {
		// A caller that got the pool just as the endpoint left the cluster:
		// serve it on a private connection that closes after its stream.
		pending = p.dialLocked(false)
	} else {
		for i := 0; i < len(p.conns); i++ {
			c := p.conns[i]
			select {
			case <-c.ready:
			default:
				if pending == nil && p.joinableLocked(c) {
					pending = c
				}
				continue
			}
			if c.cc == nil || h2Unusable(c.cc) {
				c.retired = true
				p.conns = append(p.conns[:i], p.conns[i+1:]...)
				i--
				if c.streams == 0 && c.cc != nil {
					dead = append(dead, c.cc)
				}
				continue
			}
			if p.underCapLocked(c) && c.cc.CanTakeNewRequest() {
				c.streams++
				p.mu.Unlock()
				return c, nil
			}
		}
		if pending == nil {
			pending = p.dialLocked(true)
		}
	}
	pending.streams++
	p.mu.Unlock()

	select {
	case <-pending.ready:
	case <-ctx.Done():
		p.release(pending)
		return nil, ctx.Err()
	}
	if pending.err != nil {
		p.release(pending)
		return nil, pending.err
	}
	return pending, nil
}

// h2Unusable reports whether cc will never take another stream: closed,
// GOAWAY received, or marked not to be reused.
func h2Unusable(cc h2ClientConn) bool {
	st := cc.State()
	return st.Closed || st.Closing
}

// dialLocked starts dialling a connection; pooled ones are added to the
// pool so concurrent callers can wait on the same dial.
func (p *h2Pool) dialLocked(pooled bool) *h2Conn {
	c := &h2Conn{ready: make(chan struct{}), retired: !pooled}
	if pooled {
		p.conns = append(p.conns, c)
	}
	// The dial outlives any one caller's context: others may be waiting on
	// it. Cluster.Dial bounds it with the connect timeout.
	go p.dial(c)
	return c
}

func (p *h2Pool) dial(c *h2Conn) {
	cc, err := p.connect()
	p.mu.Lock()
	c.cc, c.err = cc, err
	if cc != nil {
		if p.maxAge > 0 {
			time.AfterFunc(p.maxAge, func() { p.expire(c) })
		}
		if n := cc.State().MaxConcurrentStreams; n > 0 {
			p.peerLimit = int(n)
		}
	}
	if err != nil && !c.retired {
		c.retired = true
		p.removeLocked(c)
	}
	closeNow := cc != nil && c.retired && c.streams == 0
	close(c.ready)
	p.mu.Unlock()
	if closeNow {
		cc.Close()
	}
}

func (p *h2Pool) connect() (h2ClientConn, error) {
	cl := p.ep.Cluster
	// Without configured ALPN we offer h2; configured values (Istio's
	// "istio-peer-exchange", "istio") are sent as they are, and the codec
	// is the cluster's explicit HTTP/2, as in Envoy.
	var alpn []string
	if spec := cl.Spec(); cl.TLS() && (spec.TLS == nil || len(spec.TLS.ALPN) == 0) {
		alpn = []string{"h2"}
	}
	conn, err := p.ep.Dial(context.Background(), alpn...) // with its auto_sni name
	if err != nil {
		return nil, &h2ConnectError{fmt.Errorf("cluster %q: %w", cl.Name, err)}
	}
	if cs, ok := conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		if proto := cs.ConnectionState().NegotiatedProtocol; proto != "h2" && (len(alpn) > 0 || proto == "http/1.1") {
			conn.Close()
			return nil, &h2ConnectError{fmt.Errorf("cluster %q: upstream %s negotiated ALPN %q, want h2", cl.Name, p.ep.Host.Address, proto)}
		}
	}
	cc := newH2cliConn(conn, p.cfg)
	// The PING's ack comes after the peer's SETTINGS, so once it is back
	// the stream limit is the peer's real one, not our guess of 100,
	// and we know the peer speaks HTTP/2 at all.
	ctx, cancel := context.WithTimeout(context.Background(), cl.ConnectTimeout())
	defer cancel()
	if err := cc.Ping(ctx); err != nil {
		cc.Close()
		return nil, &h2ConnectError{fmt.Errorf("cluster %q: http2 handshake with %s: %w", cl.Name, p.ep.Host.Address, err)}
	}
	return cc, nil
}

// expire retires c at max_connection_duration, as a GOAWAY would: no new
// streams; it closes now when idle, else when its last stream ends
// (release).
func (p *h2Pool) expire(c *h2Conn) {
	p.mu.Lock()
	if c.retired {
		p.mu.Unlock()
		return // already leaving the pool; whoever retired it closes it
	}
	c.retired = true
	p.removeLocked(c)
	idle := c.streams == 0
	p.mu.Unlock()
	c.cc.SetDoNotReuse()
	if idle {
		c.cc.Close()
	}
}

// removeLocked drops c from the pool's list (it keeps serving its streams).
func (p *h2Pool) removeLocked(c *h2Conn) {
	for i, x := range p.conns {
		if x == c {
			p.conns = append(p.conns[:i], p.conns[i+1:]...)
			return
		}
	}
}

// release ends one stream placed on c by acquire/pickOrDial.
func (p *h2Pool) release(c *h2Conn) {
	p.mu.Lock()
	c.streams--
	var closeCC h2ClientConn
	if c.streams == 0 && c.retired {
		select {
		case <-c.ready:
			closeCC = c.cc
		default: // dial still running: dial closes it
		}
	}
	p.mu.Unlock()
	if closeCC != nil {
		closeCC.Close()
	}
}

// Close stops pooling: idle connections close now, busy ones when their
// last stream ends. The pool keeps working for callers that still hold it,
// each on a private connection.
func (p *h2Pool) Close() error {
	p.mu.Lock()
	p.closed = true
	var idle []h2ClientConn
	for _, c := range p.conns {
		c.retired = true
		if c.streams > 0 {
			continue
		}
		select {
		case <-c.ready:
			if c.cc != nil {
				idle = append(idle, c.cc)
			}
		default: // dial closes it when done
		}
	}
	p.conns = nil
	p.mu.Unlock()
	for _, cc := range idle {
		cc.Close()
	}
	return nil
}

// connCount returns the number of pooled connections (tests, admin).
func (p *h2Pool) connCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// roundTripH2 sends req to ep over the endpoint's HTTP/2 pool (h2c, or h2
// over TLS when the cluster has TLS) and returns the response with body and
// trailers streaming. The stream's pool slot is held until the body is
// closed or read to the end. Used by both downstream codecs.
//
// Errors: an *h2ConnectError (isUpstreamConnectError) when no connection
// could be opened (UF); ctx's error when ctx ended first (UT or DC, the
// caller knows which); anything else is a reset or lost connection before
// response headers (UR/UC).
func (p *Proxy) roundTripH2(ctx context.Context, ep *upstream.Endpoint, req *http.Request) (*http.Response, error) {
	pool := h2PoolOf(ep)
	c, err := pool.acquire(ctx)
	if err != nil {
		return nil, err
	}
	prepareH2Request(ctx, req, ep.Cluster.TLS())
	resp, err := c.cc.RoundTrip(req)
	if err != nil {
		pool.release(c)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, fmt.Errorf("cluster %q: upstream %s: %w", ep.Cluster.Name, ep.Host.Address, err)
	}
	resp.Body = &h2PooledBody{rc: resp.Body, pool: pool, c: c}
	return resp, nil
}

// prepareH2Request makes req ready for the upstream connection: it binds
// ctx, fills scheme and authority, and drops the connection-specific
// headers HTTP/2 forbids (RFC 9113 §8.2.2), keeping "te: trailers".
func prepareH2Request(ctx context.Context, req *http.Request, useTLS bool) {
	if req.Context() != ctx {
		*req = *req.WithContext(ctx)
	}
	if req.URL.Scheme == "" {
		req.URL.Scheme = "http"
		if useTLS {
			req.URL.Scheme = "https"
		}
	}
	if req.Host == "" {
		req.Host = req.URL.Host
	}
	h2StripHopByHop(req.Header)
}

// h2HopByHop are connection-specific fields never forwarded (RFC 9110
// §7.6.1, RFC 9113 §8.2.2). "te" is handled separately.
var h2HopByHop = []string{
	"Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding",
	"Upgrade", "Proxy-Authenticate", "Proxy-Authorization",
}

// h2StripHopByHop removes hop-by-hop headers, including those named by
// Connection, and keeps te only when it is "trailers" (gRPC needs it).
func h2StripHopByHop(h http.Header) {
	for _, v := range h["Connection"] {
		for name := range h2SplitComma(v) {
			if name != "" {
				h.Del(name)
			}
		}
	}
	for _, k := range h2HopByHop {
		delete(h, k)
	}
	if te, ok := h["Te"]; ok {
		keep := false
		for _, v := range te {
			for t := range h2SplitComma(v) {
				if strings.EqualFold(t, "trailers") {
					keep = true
				}
			}
		}
		if keep {
			if len(te) != 1 || te[0] != "trailers" {
				h["Te"] = []string{"trailers"}
			}
		} else {
			delete(h, "Te")
		}
	}
}

// h2PooledBody returns the stream's slot to the pool when the body ends.
type h2PooledBody struct {
	rc   io.ReadCloser
	pool *h2Pool
	c    *h2Conn
	once sync.Once
}

func (b *h2PooledBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil {
		b.done()
	}
	return n, err
}

func (b *h2PooledBody) Close() error {
	err := b.rc.Close()
	b.done()
	return err
}

func (b *h2PooledBody) done() { b.once.Do(func() { b.pool.release(b.c) }) }

// h2SplitComma yields the trimmed elements of a comma-separated header value.
func h2SplitComma(v string) func(yield func(string) bool) {
	return func(yield func(string) bool) {
		for part := range strings.SplitSeq(v, ",") {
			if !yield(strings.TrimSpace(part)) {
				return
			}
		}
	}
}
