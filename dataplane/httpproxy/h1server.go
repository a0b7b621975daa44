package httpproxy

import (
	"context"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"time"

	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/telemetry"
)

const (
	downstreamReadBuf  = 4 << 10
	downstreamWriteBuf = 8 << 10
)

// h1Session is the state of one downstream HTTP/1.1 connection. Sessions
// are recycled through Proxy.sessions; everything per request lives in
// reusable fields.
type h1Session struct {
	p    *Proxy
	ctx  context.Context
	conn net.Conn
	hcm  *state.HTTPConnectionManager
	info *ConnInfo

	br   h1Reader
	bw   h1Writer
	req  h1Request
	resp h1Response
	body bodyReader // request body
	rb   bodyReader // response body
	d    decision
	fc   policy.FormatContext
	muts []*state.HeaderMutation

	// Retries, timeouts and the replay buffer of the current request.
	to         requestTimeouts
	rs         retryState
	replayBody []byte
	bodyPrefix bool // replayBody is only the start of a longer body
	overloaded bool // a circuit breaker refused the request
	// upConn and upDeadline feed onUpFill while a response body streams.
	upConn     *h1UpConn
	upDeadline time.Time
	onUpFill   func()

	// upPath and upAuthority are the upstream request's target and host
	// (after rewrites); they may alias req.raw.
	upPath, upAuthority string

	// trl holds response trailers passed through (enable_trailers).
	trl hlist

	// remoteIP is the downstream address as text, for x-forwarded-for.
	remoteIP []byte
	// xfcc is the connection's x-forwarded-client-cert treatment (xfcc.go).
	xfcc xfccPlan

	// rec is the telemetry record of the current request (h1telemetry.go);
	// reqRead and sent feed it.
	rec     telemetry.HTTPRecord
	reqRead bool
	sent    int64

	stopDrain func() bool
	noRecycle bool
	served    uint32 // requests read on this connection
	// expires is when max_connection_duration ends the connection (zero:
	// never): the response in flight then closes it, and an idle
	// connection's read deadline is never later.
	expires  time.Time
	draining atomic.Bool
	idle     atomic.Bool

	// Per-request deadlines (zero = none) for the downstream reads.
	reqDeadline time.Time
	headStart   time.Time
	onBodyFill  func()
	onHeadFill  func()
}

func newH1Session(p *Proxy) *h1Session {
	s := &h1Session{p: p}
	s.onBodyFill = s.bodyDeadline
	s.onHeadFill = s.headDeadline
	s.onUpFill = s.upstreamFill
	return s
}

func (s *h1Session) start(ctx context.Context, conn net.Conn, hcm *state.HTTPConnectionManager, info *ConnInfo) {
	s.ctx, s.conn, s.hcm, s.info = ctx, conn, hcm, info
	s.br.reset(conn, downstreamReadBuf)
	s.bw.reset(conn, downstreamWriteBuf)
	s.remoteIP = s.remoteIP[:0]
	if info.Remote.IsValid() {
		s.remoteIP = info.Remote.Addr().Unmap().AppendTo(s.remoteIP)
	}
	s.xfcc = planXFCC(hcm, info)
	s.draining.Store(false)
	s.idle.Store(false)
	s.noRecycle = false
	s.served = 0
	s.expires = time.Time{}
	if d := hcm.MaxConnectionDuration; d > 0 {
		s.expires = time.Now().Add(d)
	}
	s.stopDrain = context.AfterFunc(ctx, s.drain)
}

// stop unregisters the drain hook. When the hook already ran (or is
// running), the session must not be recycled: the hook may still touch it.
func (s *h1Session) stop() {
	if s.stopDrain != nil {
		if !s.stopDrain() {
			s.noRecycle = true
		}
		s.stopDrain = nil
	}
}

// clear drops references before the session goes back to the pool.
func (s *h1Session) clear() {
	s.ctx, s.conn, s.hcm, s.info = nil, nil, nil, nil
	s.br.rd, s.bw.w = nil, nil
	s.d = decision{}
	s.body, s.rb = bodyReader{}, bodyReader{}
	s.muts = s.muts[:0]
	s.upConn = nil
	s.rs = retryState{tried: s.rs.tried[:0]}
	if cap(s.replayBody) > 2*maxReplayBody {
		s.replayBody = nil
	}
}

// drain runs when the listener drains: an idle connection is woken and
// closed now; a busy one finishes its response with connection: close.
func (s *h1Session) drain() {
	s.draining.Store(true)
	if s.idle.Load() {
		_ = s.conn.SetReadDeadline(time.Now())
	}
}

// armIdle sets the deadline for the next request's first byte: the idle
// timeout, or the end of max_connection_duration when that comes first.
func (s *h1Session) armIdle() {
	var dl time.Time
	if t := s.hcm.IdleTimeout; t > 0 {
		dl = time.Now().Add(t)
	}
	if !s.expires.IsZero() && (dl.IsZero() || s.expires.Before(dl)) {
		dl = s.expires
	}
	_ = s.conn.SetReadDeadline(dl)
}

// bodyDeadline runs before each blocking read of a request body: the
// stream idle timeout restarts on every read, bounded by request_timeout.
func (s *h1Session) bodyDeadline() {
	var dl time.Time
	if t := s.hcm.StreamIdleTimeout; t > 0 {
		dl = time.Now().Add(t)
	}
	if !s.reqDeadline.IsZero() && (dl.IsZero() || s.reqDeadline.Before(dl)) {
		dl = s.reqDeadline
	}
	_ = s.conn.SetReadDeadline(dl)
}

// headDeadline runs before each blocking read of a request head once its
// first byte arrived.
func (s *h1Session) headDeadline() {
	var dl time.Time
	if t := s.hcm.RequestHeadersTimeout; t > 0 {
		dl = s.headStart.Add(t)
	}
	if !s.reqDeadline.IsZero() && (dl.IsZero() || s.reqDeadline.Before(dl)) {
		dl = s.reqDeadline
	}
	if dl.IsZero() {
		if t := s.hcm.StreamIdleTimeout; t > 0 {
			dl = time.Now().Add(t)
		}
	}
	_ = s.conn.SetReadDeadline(dl)
}

func (s *h1Session) serve() {
	for s.serveOne() {
	}
}

func (s *h1Session) maxHead() int {
	kb := s.hcm.MaxRequestHeadersKB
	if kb == 0 {
		kb = state.DefaultMaxRequestHeadersKB
	}
	return int(kb) << 10
}

func (s *h1Session) maxHeaders() int {
	if n := s.hcm.MaxHeadersCount; n > 0 {
		return int(n)
	}
	return state.DefaultMaxHeadersCount
}

// readRequest reads and parses the next request head. It returns false
// when the connection should close (after answering protocol errors).
func (s *h1Session) readRequest() bool {
	s.idle.Store(true)
	if s.draining.Load() {
		return false
	}
	if s.br.buffered() == 0 {
		s.armIdle()
		if err := s.br.fill(); err != nil {
			return false // closed, idle timeout or drain between requests
		}
	}
	s.idle.Store(false)
	started := time.Now()
	s.reqDeadline = time.Time{}
	if t := s.hcm.RequestTimeout; t > 0 {
		s.reqDeadline = started.Add(t)
	}
	s.headStart = started
	s.br.onFill = s.onHeadFill
	n, _, err := s.br.readHead(s.maxHead(), errHeadersTooLarge)
	s.br.onFill = nil
	if err != nil {
		s.requestError(err)
		return false
	}
	err = s.req.parse(s.br.buf[s.br.r:s.br.r+n], s.maxHeaders())
	s.br.discard(n)
	if err != nil {
		s.requestError(err)
		return false
	}
	return true
}

// requestError answers a request that could not be read, then the
// connection closes.
func (s *h1Session) requestError(err error) {
	var he *h1Error
	switch {
	case errors.As(err, &he):
		s.writeSimple(he.status, FlagDownstreamProtocolErr, "")
	case isTimeout(err):
		if s.draining.Load() {
			return
		}
		body := BodyHeaderTimeout
		if !s.reqDeadline.IsZero() && !time.Now().Before(s.reqDeadline) {
			body = BodyRequestTimeout
		}
		s.writeSimple(408, FlagStreamIdleTimeout, body)
	}
	// Other errors are the peer going away mid-head: nothing to answer.
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// serveRequest serves one request; false means close the connection.
// serveOne (h1telemetry.go) wraps it to record the request.
func (s *h1Session) serveRequest() bool {
	if !s.readRequest() {
		return false
	}
	s.reqRead = true
	s.served++
	r := &s.req
	d := &s.d
	s.overloaded = false
	s.rs.attempts = 0
	s.body.reset(&s.br, r.framing, r.contentLength)
	s.body.trailerLimit = s.maxHead()

	s.p.decideHCM(s.hcm, r, s.info, false, d)
	defer d.releaseFaults()
	if !s.p.runFilters(context.Background(), s.hcm, r, d, s.conn) {
		return false
	}
	if !d.local() && r.upgrade && d.action != nil && d.action.UpgradeWebSocketDisabled {
		d.setLocal(403, FlagNone, "")
	}
	s.muts = d.appendMutations(s.muts[:0])
	s.p.formatContext(&s.fc, s.info, d, protoName(r.minor))
	if d.local() {
		return s.localReply()
	}
	s.prepareUpstreamHead()
	if r.upgrade {
		return s.upgrade()
	}
	if d.proto == state.UpstreamHTTP2 {
		return s.forwardH2()
	}
	return s.forwardH1()
}

func protoName(minor int) string {
	if minor == 0 {
		return "HTTP/1.0"
	}
	return "HTTP/1.1"
}

// canReuse reports whether the request was consumed completely, so another
// request can follow on the connection. A request body not read by a local
// reply is skipped when it is already buffered, else the connection closes
// (Envoy does the same rather than read an unbounded body).
func (s *h1Session) skipBody() bool {
	if s.body.done {
		return true
	}
	if s.body.mode == bodyLength && int64(s.br.buffered()) >= s.body.remain {
		s.br.discard(int(s.body.remain))
		s.body.done = true
		return true
	}
	return false
}

// continue100 answers Expect: 100-continue before the body is read: like
// Envoy we answer it ourselves instead of forwarding the expectation.
func (s *h1Session) continue100() {
	if s.req.expectContinue && !s.body.done {
		s.bw.writeString("HTTP/1.1 100 Continue\r\n\r\n")
		_ = s.bw.flush()
		s.req.expectContinue = false
	}
}

// readBodyErr maps a failed request-body read to the reply Envoy gives.
func (s *h1Session) readBodyErr(err error) {
	var he *h1Error
	switch {
	case errors.As(err, &he):
		s.writeSimple(he.status, FlagDownstreamProtocolErr, "")
	case isTimeout(err):
		body := BodyStreamTimeout
		if !s.reqDeadline.IsZero() && !time.Now().Before(s.reqDeadline) {
			body = BodyRequestTimeout
		}
		s.writeSimple(408, FlagStreamIdleTimeout, body)
	}
}

// keepAfter reports whether the downstream connection stays open after a
// response.
func (s *h1Session) keepAfter() bool {
	return s.req.keepAlive && !s.draining.Load() && !s.h1RequestLimitReached() && !s.expired()
}

// expired reports whether max_connection_duration has passed.
func (s *h1Session) expired() bool {
	return !s.expires.IsZero() && !time.Now().Before(s.expires)
}
