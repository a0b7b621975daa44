package httpproxy

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"time"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/policy"
)

// maxResponseHead bounds an upstream response head (Envoy's
// max_response_headers_kb default).
const maxResponseHead = 60 << 10

// BodyProtocolError is the local reply to an upstream that broke HTTP/1.1.
const BodyProtocolError = "upstream connect error or disconnect/reset before headers. reset reason: protocol error"

// prepareUpstreamHead turns the parsed request into the upstream request:
// hop-by-hop and framing headers go, x-forwarded-*, x-request-id and the
// route's header mutations are applied, path and host are rewritten.
func (s *h1Session) prepareUpstreamHead() {
	r := &s.req
	d := &s.d
	h := &r.hdr
	j := 0
	xfccAt := -1 // last x-forwarded-client-cert line kept
	for i := range h.h {
		switch string(h.h[i].name) {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding",
			"te", "expect", "content-length", "host":
			continue
		case "upgrade":
			if !r.upgrade {
				continue
			}
		case headerXFCC:
			if s.xfcc.act == xfccRemove || s.xfcc.act == xfccSet {
				continue
			}
			xfccAt = j
		}
		h.h[j] = h.h[i]
		j++
	}
	h.h = h.h[:j]
	switch s.xfcc.act {
	case xfccSet:
		h.add(headerXFCC, s.xfcc.elem)
	case xfccAppend:
		s.appendXFCC(xfccAt)
	}

	hcm := s.hcm
	if hcm.UseRemoteAddress && !hcm.SkipXffAppend && len(s.remoteIP) > 0 {
		s.appendXFF()
	}
	if hcm.UseRemoteAddress || !h.has("x-forwarded-proto") {
		h.set("x-forwarded-proto", schemeOf(s.info))
	}
	if hcm.GenerateRequestID {
		_, ok := h.get("x-request-id")
		edge := hcm.UseRemoteAddress && !isInternal(s)
		if !ok || (edge && !hcm.PreserveExternalRequestID) {
			h.del("x-request-id")
			var id [36]byte
			newUUID(&id)
			h.addBytes("x-request-id", id[:])
		}
	}
	applyMutations(s.muts, false, &s.fc, h)
	if d.vh != nil && d.vh.IncludeAttemptCount {
		h.del(headerAttemptCount) // the router sets its own per attempt
	}

	s.upPath = bstr(r.path)
	s.upAuthority = bstr(r.authority)
	if a := d.action; a != nil {
		if a.PrefixRewrite != "" || a.RegexRewrite != nil {
			s.upPath = policy.RewritePath(d.route, a, s.upPath)
		}
		if a.HostRewriteLiteral != "" || a.AutoHostRewrite || a.HostRewriteHeader != "" {
			if host, ok := policy.RewriteHost(a, r, d.host.Hostname); ok {
				s.upAuthority = host
			}
		}
	}
}

func isInternal(s *h1Session) bool { return internalAddr(s.info.Remote.Addr()) }

// appendXFF appends the downstream address to the last x-forwarded-for
// line, or adds one.
func (s *h1Session) appendXFF() {
	h := &s.req.hdr
	last := -1
	for i := range h.h {
		if string(h.h[i].name) == "x-forwarded-for" {
			last = i
		}
	}
	if last < 0 {
		h.addBytes("x-forwarded-for", s.remoteIP)
		return
	}
	start := len(h.arena)
	h.arena = append(h.arena, h.h[last].value...)
	h.arena = append(h.arena, ',')
	h.arena = append(h.arena, s.remoteIP...)
	h.h[last].value = h.arena[start:len(h.arena):len(h.arena)]
}

// appendXFCC adds this hop's element to the x-forwarded-client-cert line
// at index at (the last one; earlier lines are the same list), or adds a
// line when at is -1.
func (s *h1Session) appendXFCC(at int) {
	h := &s.req.hdr
	if at < 0 || len(h.h[at].value) == 0 {
		if at >= 0 {
			h.h = append(h.h[:at], h.h[at+1:]...)
		}
		h.add(headerXFCC, s.xfcc.elem)
		return
	}
	start := len(h.arena)
	h.arena = append(h.arena, h.h[at].value...)
	h.arena = append(h.arena, ',')
	h.arena = append(h.arena, s.xfcc.elem...)
	h.h[at].value = h.arena[start:len(h.arena):len(h.arena)]
}

// writeUpstreamHead serializes the prepared request head.
func (s *h1Session) writeUpstreamHead(w *h1Writer) {
	r := &s.req
	w.write(r.method)
	w.writeByte(' ')
	w.writeString(s.upPath)
	w.writeString(" HTTP/1.1\r\nhost: ")
	w.writeString(s.upAuthority)
	w.writeString("\r\n")
	if s.d.vh != nil && s.d.vh.IncludeAttemptCount && s.rs.attempts > 0 {
		w.writeString(headerAttemptCount + ": ")
		w.writeString(attemptCount(s.rs.attempts))
		w.writeString("\r\n")
	}
	for i := range r.hdr.h {
		f := &r.hdr.h[i]
		w.write(f.name)
		w.writeString(": ")
		w.write(f.value)
		w.writeString("\r\n")
	}
	switch r.framing {
	case bodyLength:
		w.writeString("content-length: ")
		w.writeInt(r.contentLength)
		w.writeString("\r\n")
	case bodyChunked:
		w.writeString("transfer-encoding: chunked\r\n")
	}
	if r.upgrade {
		w.writeString("connection: upgrade\r\n")
	}
	w.writeString("\r\n")
}

// forwardH1 sends the request to the picked endpoint over its HTTP/1.1
// pool and streams the response back, retrying under the route's retry
// policy. false means close downstream. Without a retry policy or mirrors
// the request body streams and nothing is allocated.
func (s *h1Session) forwardH1() bool {
	d := &s.d
	r := &s.req
	rp := policy.EffectiveRetryPolicy(d.vh, d.action)
	mirrors := d.action != nil && len(d.action.MirrorPolicies) > 0
	s.continue100()
	computeTimeouts(&s.to, d, r, false, s.hcm.StreamIdleTimeout)
	s.replayBody = s.replayBody[:0]
	s.bodyPrefix = false
	replay := s.body.done
	if !replay && (rp != nil || mirrors) {
		var err error
		if replay, err = s.bufferBody(); err != nil {
			s.readBodyErr(err)
			return false
		}
	}
	if mirrors && replay {
		s.p.mirrorH1(s)
	}
	if !replay {
		rp = nil // a streamed body cannot be sent twice
	}
	rs := &s.rs
	rs.init(rp, d.cluster)
	defer rs.done()
	overall, streamDL := s.to.overall(time.Now())
	ctx := s.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	for {
		res := s.attemptH1(overall)
		if res.local {
			return res.keep
		}
		if res.uc != nil {
			a := policy.Attempt{Status: s.resp.status, GRPCStatus: -1, Sent: true}
			if rp != nil && policy.WantsResponseHeaders(rp) {
				v, ok := s.resp.hdr.get("grpc-status")
				a.GRPCStatus = grpcStatusOf(string(v), ok)
				if len(rp.RetriableHeaders) > 0 || s.resp.hdr.has("x-envoy-ratelimited") {
					a.Headers = &hlistRequest{l: &s.resp.hdr}
				}
				if rs.next(ctx, &a, overall) {
					res.uc.conn.Close()
					res.done()
					if !rs.repick(d) {
						return s.failLocal(503, rs.finalFlags(FlagNoHealthyUpstream), BodyNoHealthyUpstream)
					}
					continue
				}
			}
			d.flags = rs.finalFlags(d.flags)
			keep := s.relayResponse(res.uc, res.pool)
			res.done()
			return keep
		}
		// No response head.
		if res.dc {
			d.flags = FlagDownstreamTerminate
			return false
		}
		if res.overall {
			if streamDL {
				return s.failLocal(408, FlagNone, BodyDurationTimeout)
			}
			return s.failLocal(504, rs.finalFlags(FlagUpstreamTimeout), BodyUpstreamTimeout)
		}
		a := policy.Attempt{Failure: res.failure, GRPCStatus: -1, Sent: res.sent}
		if rs.next(ctx, &a, overall) {
			if !rs.repick(d) {
				return s.failLocal(503, rs.finalFlags(FlagNoHealthyUpstream), BodyNoHealthyUpstream)
			}
			continue
		}
		if res.perTry {
			return s.failLocal(504, rs.finalFlags(FlagUpstreamTimeout), BodyUpstreamTimeout)
		}
		if res.maxDur {
			status, flags, body := upstreamStreamDurationReply(s.body.done)
			return s.failLocal(status, rs.finalFlags(flags), body)
		}
		if res.failure == policy.FailureConnect {
			return s.failLocal(503, rs.finalFlags(FlagUpstreamConnFailure), BodyConnFailure)
		}
		return s.upstreamErrorFlags(res.err, rs)
	}
}

// h1Attempt is the outcome of one upstream attempt.
type h1Attempt struct {
	// local: a local reply was already written (keep tells the caller).
	local, keep bool
	// uc is set when a response head arrived (in s.resp); release must be
	// called once the response is done.
	uc   *h1UpConn
	pool *h1Pool
	host *lb.Host
	cb   func() // circuit-breaker release
	// Otherwise the failure.
	failure policy.Failure
	err     error
	sent    bool
	perTry  bool // the per-try timeout expired
	overall bool // the request's overall deadline expired
	maxDur  bool // the cluster's max_stream_duration expired
	dc      bool // the downstream went away while waiting
}

// attemptH1 makes one attempt on s.d's current host.
func (s *h1Session) attemptH1(overall time.Time) (res h1Attempt) {
	d := &s.d
	r := &s.req
	rs := &s.rs
	if !overall.IsZero() && !time.Now().Before(overall) {
		res.overall = true
		return res
	}
	release, ok := d.cluster.Acquire(upstream.ResourceRequests)
	if !ok {
		s.overloaded = true
		res.local = true
		res.keep = s.failLocal(503, rs.finalFlags(FlagUpstreamOverflow), BodyOverflow)
		return res
	}
	h := d.host
	h.Acquire()
	rs.started(h)
	fail := func() {
		h.Release()
		release()
	}
	pool := h1PoolOf(d.ep)
	now := time.Now()
	dl, sdl, perTry, maxDur := s.to.attemptBounds(d.cluster, now, overall)
	var uc *h1UpConn
	for stale := 0; ; stale++ {
		var err error
		uc, err = pool.get(context.Background(), stale > 0)
		if err != nil {
			d.cluster.ReportLocal(h, upstream.ConnectFailure)
			fail()
			res.failure, res.err = policy.FailureConnect, err
			if errors.Is(err, errPendingOverflow) {
				s.overloaded = true
				res.local = true
				res.keep = s.failLocal(503, rs.finalFlags(FlagUpstreamOverflow), BodyOverflow)
			}
			return res
		}
		s.writeUpstreamHead(&uc.bw)
		if !s.body.done || len(s.replayBody) > 0 {
			res.sent = true
			if werr := s.writeRequestBody(uc); werr != nil {
				uc.conn.Close()
				fail()
				s.readBodyErr(werr)
				res.local, res.keep = true, false
				return res
			}
		}
		// A failed write still gets a read: the upstream may have answered
		// early (413, 401) and closed.
		_ = uc.bw.flush()
		err = s.waitResponseHead(uc, dl)
		if err == nil {
			break
		}
		uc.conn.Close()
		if errRetryable(err) && uc.reuse && stale == 0 && (r.framing == bodyNone || len(s.replayBody) > 0 && !s.bodyPrefix) {
			// The pooled connection had been closed by the upstream while
			// idle; nothing was consumed, so a fresh connection may retry.
			continue
		}
		fail()
		switch {
		case err == errDownstreamGone:
			res.dc = true
		case isTimeout(err):
			d.cluster.ReportLocal(h, upstream.RequestTimeout)
			if maxDur && !time.Now().Before(sdl) { // not per_try_idle_timeout
				res.maxDur = true
				res.failure = policy.FailureReset
			} else if perTry {
				res.perTry = true
				res.failure = policy.FailureReset
			} else {
				res.overall = !overall.IsZero()
				res.failure = policy.FailureReset
			}
		default:
			d.cluster.ReportLocal(h, upstream.UpstreamReset)
			res.failure = policy.FailureReset
		}
		res.err = err
		return res
	}
	d.cluster.ReportHTTP(h, s.resp.status)
	s.upDeadline = minTime(overall, sdl) // the body too ends at max_stream_duration
	s.upConn = uc
	uc.br.onFill = s.onUpFill
	res.uc, res.pool, res.host, res.cb = uc, pool, h, release
	return res
}

// done ends a successful attempt: the host's active count and the
// circuit-breaker unit.
func (a *h1Attempt) done() {
	a.host.Release()
	a.cb()
}

// writeRequestBody sends the request body: the replay buffer, then (when
// the buffer overflowed) the rest of the stream.
func (s *h1Session) writeRequestBody(uc *h1UpConn) error {
	chunked := s.req.framing == bodyChunked
	if len(s.replayBody) > 0 {
		if chunked {
			uc.bw.writeChunk(s.replayBody)
		} else {
			uc.bw.write(s.replayBody)
		}
		if !s.bodyPrefix {
			if chunked {
				uc.bw.writeString("0\r\n\r\n")
			}
			return nil
		}
	}
	if s.body.done {
		if chunked {
			uc.bw.writeString("0\r\n\r\n")
		}
		return nil
	}
	s.br.onFill = s.onBodyFill
	res := copyBody(&uc.bw, &s.body, chunked)
	s.br.onFill = nil
	return res.readErr
}

// bufferBody reads the request body into s.replayBody, up to
// maxReplayBody. whole reports that all of it fit; the request is then
// sent with a content-length. Otherwise the buffered prefix is sent
// first and the rest streams.
func (s *h1Session) bufferBody() (whole bool, err error) {
	s.br.onFill = s.onBodyFill
	defer func() { s.br.onFill = nil }()
	if s.req.framing == bodyLength && s.req.contentLength > maxReplayBody {
		return false, nil
	}
	for !s.body.done {
		p, rerr := s.body.next()
		if len(p) > 0 {
			s.replayBody = append(s.replayBody, p...)
			if len(s.replayBody) > maxReplayBody {
				s.bodyPrefix = true
				return false, nil
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return false, rerr
		}
	}
	s.req.framing = bodyLength
	s.req.contentLength = int64(len(s.replayBody))
	return true, nil
}

// dcPollInterval is how often a long wait for an upstream response checks
// whether the downstream client went away, when its connection cannot be
// watched (see dcwatch.go) or pipelined bytes ended the watch.
const dcPollInterval = time.Second

var errDownstreamGone = errors.New("downstream closed while waiting for the upstream")

// waitResponseHead reads the response head with deadline dl (zero: the
// stream idle timeout). A client that leaves meanwhile cancels the
// upstream request (DC): past dcGrace a watcher wakes the read as soon as
// the downstream closes.
func (s *h1Session) waitResponseHead(uc *h1UpConn, dl time.Time) error {
	now := time.Now()
	limit := dl
	if limit.IsZero() && s.to.idle > 0 {
		limit = now.Add(s.to.idle)
	}
	if s.to.perTryIdle > 0 {
		limit = minTime(limit, now.Add(s.to.perTryIdle))
	}
	var w *dcWatch
	step := now.Add(dcGrace) // zero once a watcher runs: it wakes us
	grace := true
	for {
		wake, short := limit, false
		if !step.IsZero() && (limit.IsZero() || step.Before(limit)) {
			wake, short = step, true
		}
		_ = uc.conn.SetReadDeadline(wake)
		var err error
		if w != nil && w.ended() {
			// The watcher spoke before the deadline above was set, which
			// may have overwritten its wake-up.
			err = os.ErrDeadlineExceeded
		} else {
			err = s.readResponseHead(uc)
		}
		if err == nil || !isTimeout(err) {
			if w != nil {
				w.stop(s.conn)
			}
			return err
		}
		switch {
		case w != nil && w.ended():
			gone := w.stop(s.conn)
			w = nil
			if gone {
				return errDownstreamGone
			}
			// Bytes arrived: fall back to polling.
			step = time.Now().Add(dcPollInterval)
			continue
		case !short:
			if w != nil {
				w.stop(s.conn)
			}
			return err // the request's own deadline
		case grace:
			// Slow response: watch the client from now on.
			grace = false
			if w = startDCWatch(s.conn, func(bool) { _ = uc.conn.SetReadDeadline(time.Now()) }); w != nil {
				step = time.Time{}
				continue
			}
		}
		if s.downstreamGone() {
			return errDownstreamGone
		}
		step = time.Now().Add(dcPollInterval)
	}
}

// downstreamGone checks, without blocking, whether the downstream
// connection was closed. Pipelined bytes that arrive stay buffered.
func (s *h1Session) downstreamGone() bool {
	_ = s.conn.SetReadDeadline(time.Now().Add(time.Millisecond))
	err := s.br.fill()
	_ = s.conn.SetReadDeadline(time.Time{})
	return err != nil && !isTimeout(err) && err != errBufferFull
}

// upstreamFill runs before each blocking read of an upstream response
// body: the stream idle timeout restarts on every read, bounded by the
// request's overall deadline.
func (s *h1Session) upstreamFill() {
	dl := s.upDeadline
	if s.to.idle > 0 {
		dl = minTime(dl, time.Now().Add(s.to.idle))
	}
	if s.upConn != nil {
		_ = s.upConn.conn.SetReadDeadline(dl)
	}
}

// armUpstream sets the deadline for an upgrade's response: the route
// timeout, else the stream idle timeout.
func (s *h1Session) armUpstream(uc *h1UpConn) {
	var dl time.Time
	if t := s.d.timeout; t > 0 {
		dl = time.Now().Add(t)
	} else if t := s.hcm.StreamIdleTimeout; t > 0 {
		dl = time.Now().Add(t)
	}
	_ = uc.conn.SetReadDeadline(dl)
}

// errStaleConn marks a response that failed before its first byte.
var errStaleConn = errors.New("upstream closed before responding")

func errRetryable(err error) bool { return errors.Is(err, errStaleConn) }

// readResponseHead reads the final response head into s.resp, skipping
// interim 1xx responses (we answered 100-continue ourselves).
func (s *h1Session) readResponseHead(uc *h1UpConn) error {
	head := string(s.req.method) == "HEAD"
	for {
		n, started, err := uc.br.readHead(maxResponseHead, errBadStatusLine)
		if err != nil {
			if !started && !isTimeout(err) && isStale(err) {
				return errors.Join(errStaleConn, err)
			}
			return err
		}
		err = s.resp.parse(uc.br.buf[uc.br.r:uc.br.r+n], head)
		uc.br.discard(n)
		if err != nil {
			return err
		}
		if s.resp.status == 101 && s.req.upgrade {
			return nil
		}
		if s.resp.status >= 200 {
			return nil
		}
		if s.resp.status == 101 {
			return errBadStatusLine // switching protocols we did not ask for
		}
	}
}

// isStale reports errors of a connection the upstream closed.
func isStale(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// upstreamError is upstreamErrorFlags without retries (upgrades).
func (s *h1Session) upstreamError(err error) bool { return s.upstreamErrorFlags(err, nil) }

// upstreamErrorFlags answers a request whose upstream failed before the
// response head arrived, with Envoy's flag and text (plus URX/UO).
func (s *h1Session) upstreamErrorFlags(err error, rs *retryState) bool {
	var he *h1Error
	switch {
	case isTimeout(err):
		return s.failLocal(504, rs.finalFlags(FlagUpstreamTimeout), BodyUpstreamTimeout)
	case errors.As(err, &he):
		return s.failLocal(502, rs.finalFlags(FlagUpstreamProtocolErr), BodyProtocolError)
	case errors.Is(err, syscall.ECONNRESET):
		return s.failLocal(503, rs.finalFlags(FlagUpstreamRemoteReset), BodyRemoteReset)
	}
	return s.failLocal(503, rs.finalFlags(FlagUpstreamConnTerminate), BodyConnTermination)
}

// failLocal turns the routed request into a local reply.
func (s *h1Session) failLocal(status int, flags, body string) bool {
	s.d.setLocal(status, flags, body)
	s.d.location = ""
	return s.localReply()
}

// relayResponse writes the upstream response in s.resp back downstream
// and returns uc to the pool when it can carry another request.
func (s *h1Session) relayResponse(uc *h1UpConn, pool *h1Pool) bool {
	resp := &s.resp
	keep := s.keepAfter()
	chunkedOut := false
	switch resp.framing {
	case bodyChunked, bodyClose:
		if s.req.minor == 1 {
			chunkedOut = true
		} else {
			keep = false // HTTP/1.0: the close delimits the body
		}
	}
	s.prepareResponseHeaders(&resp.hdr, true)
	s.writeResponseHead(resp.status, &resp.hdr, resp.contentLength, chunkedOut, keep)

	s.rb.reset(&uc.br, resp.framing, resp.contentLength)
	if chunkedOut && resp.framing == bodyChunked && s.trailersOn() {
		s.trl.reset()
		s.rb.trailers = &s.trl
	}
	res := copyBody(&s.bw, &s.rb, chunkedOut)
	s.sent = res.n
	if res.readErr != nil || res.writeErr != nil {
		// After the head went out the only signal left is a reset.
		uc.conn.Close()
		_ = s.bw.flush()
		return false
	}
	if pool != nil && resp.keepAlive && s.rb.done && uc.bw.err == nil {
		pool.put(uc)
	} else {
		uc.conn.Close()
	}
	if s.bw.flush() != nil {
		return false
	}
	return keep
}

// trailersOn reports whether HTTP/1.1 response trailers pass through:
// Envoy needs enable_trailers on both codecs, the upstream cluster's and
// the connection manager's (both off by default).
func (s *h1Session) trailersOn() bool {
	return s.hcm.HTTP1Trailers && s.d.cluster != nil && s.d.cluster.Spec().HTTP1Trailers
}
