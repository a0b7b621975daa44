package httpproxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// h2Handler proxies the streams of one downstream HTTP/2 connection. x/net
// runs ServeHTTP on its own goroutine per stream; we add none.
type h2Handler struct {
	p      *Proxy
	hcm    *state.HTTPConnectionManager
	info   *ConnInfo
	scheme string
}

// h2BufPool holds the 32 KiB buffers response bodies are copied through.
var h2BufPool = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

func (h *h2Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.p
	start := time.Now()
	rq := h2Request{r: r, scheme: h.scheme}
	grpc := isGRPCContentType(r.Header.Get("Content-Type"))

	var d decision
	p.decide(p.routeConfig(h.hcm), &rq, h.info, true, &d)
	if !p.runFilters(r.Context(), h.hcm, &rq, &d, nil) {
		return
	}
	if d.local() {
		h.localReply(w, &d, grpc)
		return
	}

	// Upstream request: same method, headers and body; path and authority
	// after the route's rewrites. r.Header is ours to edit: x/net built it
	// for this stream.
	path, authority := r.RequestURI, r.Host
	if a := d.action; a != nil {
		if a.PrefixRewrite != "" || a.RegexRewrite != nil {
			path = policy.RewritePath(d.route, a, path)
		}
		if a.HostRewriteLiteral != "" || a.AutoHostRewrite || a.HostRewriteHeader != "" {
			if host, ok := policy.RewriteHost(a, &rq, d.host.Hostname); ok {
				authority = host
			}
		}
	}
	var mbuf [4]*state.HeaderMutation
	muts := d.appendMutations(mbuf[:0])
	var fc policy.FormatContext
	p.formatContext(&fc, h.info, &d, "HTTP/2")
	hdr := r.Header
	h.forwardedHeaders(hdr)
	applyMutations(muts, false, &fc, httpHeader(hdr))

	rp := policy.EffectiveRetryPolicy(d.vh, d.action)
	var to requestTimeouts
	computeTimeouts(&to, &d, &rq, grpc, h.hcm.StreamIdleTimeout)
	if d.vh != nil && d.vh.IncludeAttemptCount {
		delete(hdr, "X-Envoy-Attempt-Count")
	}

	// Cancelling ctx resets the upstream stream if it is still open (client
	// reset, write error, timeouts, or an early return).
	ctx, cancelCause := context.WithCancelCause(r.Context())
	defer cancelCause(nil)
	overall, streamDL := to.overall(start)
	if !overall.IsZero() {
		cause := errRouteTimeout
		if streamDL {
			cause = errStreamDuration
		}
		t := time.AfterFunc(time.Until(overall), func() { cancelCause(cause) })
		defer t.Stop()
	}
	body := r.Body
	hasBody := body != nil && body != http.NoBody
	var idle *h2IdleTimer
	if t := to.idle; t > 0 {
		idle = &h2IdleTimer{d: t}
		idle.t = time.AfterFunc(t, func() { cancelCause(errH2StreamIdle) })
		defer idle.t.Stop()
		if hasBody {
			body = &h2IdleBody{ReadCloser: body, idle: idle}
		}
	}
	mirrors := d.action != nil && len(d.action.MirrorPolicies) > 0
	var rb *replayBody
	if hasBody && (rp != nil || mirrors) {
		rb = newReplayBody(body, maxReplayBody)
	}

	out := &http.Request{
		Method:        r.Method,
		URL:           h2URL(path, authority),
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        hdr,
		Body:          body,
		ContentLength: r.ContentLength,
		Host:          authority,
	}

	var rs retryState
	rs.init(rp, d.cluster)
	defer rs.done()
	var resp *http.Response
	for {
		req := out
		if rs.attempts > 0 {
			req = out.Clone(ctx)
		}
		if rb != nil {
			req.Body = rb.reader()
		}
		var res h2Attempt
		resp, res = h.attempt(ctx, &d, &rs, &to, req, overall)
		if mirrors && rs.attempts == 1 {
			// After the first attempt a unary body has been read whole, so
			// the mirror gets it; the primary response is not held back.
			h.mirror(&d, out, rb, hasBody, to.global)
		}
		if res.overflow {
			w.Header()["X-Envoy-Overloaded"] = []string{"true"}
			d.setLocal(503, rs.finalFlags(FlagUpstreamOverflow), BodyOverflow)
			h.localReply(w, &d, grpc)
			return
		}
		if resp != nil {
			a := policy.Attempt{Status: resp.StatusCode, GRPCStatus: -1, Sent: true}
			if rp != nil && policy.WantsResponseHeaders(rp) && (rb == nil || rb.replayable()) {
				v := resp.Header["Grpc-Status"]
				a.GRPCStatus = grpcStatusOf(strings.Join(v, ""), len(v) == 1)
				a.Headers = &httpHeaderRequest{h: resp.Header}
				if rs.next(ctx, &a, overall) {
					resp.Body.Close()
					res.done()
					if !rs.repick(&d) {
						d.setLocal(503, rs.finalFlags(FlagNoHealthyUpstream), BodyNoHealthyUpstream)
						h.localReply(w, &d, grpc)
						return
					}
					continue
				}
			}
			d.flags = rs.finalFlags(d.flags)
			defer res.done()
			break
		}
		if r.Context().Err() != nil {
			return // DC: the client reset the stream or left; nobody to answer
		}
		cause := context.Cause(ctx)
		if cause == nil && !res.perTry && (rb == nil || rb.replayable()) {
			a := policy.Attempt{Failure: res.failure, GRPCStatus: -1, Sent: true}
			if rs.next(ctx, &a, overall) {
				if !rs.repick(&d) {
					d.setLocal(503, rs.finalFlags(FlagNoHealthyUpstream), BodyNoHealthyUpstream)
					h.localReply(w, &d, grpc)
					return
				}
				continue
			}
		} else if res.perTry && (rb == nil || rb.replayable()) {
			a := policy.Attempt{Failure: policy.FailureReset, GRPCStatus: -1, Sent: true}
			if rs.next(ctx, &a, overall) && rs.repick(&d) {
				continue
			}
		}
		if cause == errStreamDuration {
			h.finishHeaders(w.Header(), &d, muts, &fc)
			if grpc {
				writeGRPCStatus(w, grpcDeadlineExceeded, BodyDurationTimeout)
				return
			}
			d.setLocal(http.StatusRequestTimeout, FlagNone, BodyDurationTimeout)
			h.localReply(w, &d, false)
			return
		}
		status, flags, body := h2UpstreamFailure(ctx, res.err)
		if res.perTry {
			status, flags, body = http.StatusGatewayTimeout, FlagUpstreamTimeout, BodyUpstreamTimeout
		}
		d.setLocal(status, rs.finalFlags(flags), body)
		if grpc && grpcDeadlinePassed(r.Header, start) {
			h.finishHeaders(w.Header(), &d, muts, &fc)
			writeGRPCStatus(w, grpcDeadlineExceeded, "deadline exceeded")
			return
		}
		h.localReply(w, &d, grpc)
		return
	}
	defer resp.Body.Close()
	if idle != nil {
		resp.Body = &h2IdleBody{ReadCloser: resp.Body, idle: idle}
	}
	if d.vh != nil && d.vh.IncludeAttemptCountInResponse {
		w.Header()["X-Envoy-Attempt-Count"] = []string{attemptCount(rs.attempts)}
	}
	h.writeResponse(w, r, resp, &d, muts, &fc)
}

// Cancel causes of a stream's context.
var (
	errRouteTimeout   = errors.New("route timeout")
	errStreamDuration = errors.New("max stream duration")
	errPerTryTimeout  = errors.New("per-try timeout")
)

// h2Attempt is the outcome of one upstream attempt of the HTTP/2 path.
type h2Attempt struct {
	host     *lb.Host
	cb       func()
	failure  policy.Failure
	err      error
	perTry   bool
	overflow bool
}

func (a *h2Attempt) done() {
	if a.host != nil {
		a.host.Release()
		a.cb()
		a.host = nil
	}
}

// attempt sends req to d's current host, with the per-try timeout armed
// until the response head arrives.
func (h *h2Handler) attempt(ctx context.Context, d *decision, rs *retryState, to *requestTimeouts, req *http.Request, overall time.Time) (*http.Response, h2Attempt) {
	var res h2Attempt
	release, ok := d.cluster.Acquire(upstream.ResourceRequests)
	if !ok {
		res.overflow = true
		return nil, res
	}
	host := d.host
	host.Acquire()
	rs.started(host)
	if d.vh != nil && d.vh.IncludeAttemptCount {
		req.Header["X-Envoy-Attempt-Count"] = []string{attemptCount(rs.attempts)}
	}
	actx := ctx
	dl, perTry := to.attempt(time.Now(), overall)
	var cancel context.CancelCauseFunc
	var timer *time.Timer
	if perTry || to.perTryIdle > 0 {
		actx, cancel = context.WithCancelCause(ctx)
		wait := time.Until(dl)
		if !perTry || (to.perTryIdle > 0 && to.perTryIdle < wait) {
			wait = to.perTryIdle
		}
		timer = time.AfterFunc(wait, func() { cancel(errPerTryTimeout) })
	}
	req = req.WithContext(actx)
	var resp *http.Response
	var err error
	if d.proto == state.UpstreamHTTP2 {
		resp, err = h.p.roundTripH2(actx, d.ep, req)
	} else {
		req.URL.Scheme = ""
		resp, err = h.p.roundTripH1(actx, d.ep, req)
	}
	if timer != nil && err == nil && !timer.Stop() {
		// The per-try timer fired as the head arrived: treat as timeout.
		resp.Body.Close()
		resp, err = nil, context.Cause(actx)
	}
	if err != nil {
		if cancel != nil {
			cancel(nil)
		}
		host.Release()
		release()
		switch {
		case cancel != nil && context.Cause(actx) == errPerTryTimeout:
			res.perTry = true
			d.cluster.ReportLocal(host, upstream.RequestTimeout)
		case isDialError(err):
			res.failure = policy.FailureConnect
			d.cluster.ReportLocal(host, upstream.ConnectFailure)
		case isRefusedStream(err):
			res.failure = policy.FailureRefusedStream
			d.cluster.ReportLocal(host, upstream.UpstreamReset)
		case ctx.Err() != nil:
			res.failure = policy.FailureReset
			if context.Cause(ctx) != context.Canceled {
				d.cluster.ReportLocal(host, upstream.RequestTimeout)
			}
		default:
			res.failure = policy.FailureReset
			d.cluster.ReportLocal(host, upstream.UpstreamReset)
		}
		res.err = err
		return nil, res
	}
	d.cluster.ReportHTTP(host, resp.StatusCode)
	res.host, res.cb = host, release
	if cancel != nil {
		// The attempt context must outlive the body; cancel with the rest.
		inner := resp.Body
		resp.Body = &cancelBody{ReadCloser: inner, cancel: func() { cancel(nil) }}
	}
	return resp, res
}

// cancelBody cancels an attempt's context once its body is closed.
type cancelBody struct {
	io.ReadCloser
	cancel func()
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// isRefusedStream reports an HTTP/2 REFUSED_STREAM reset (nothing was
// processed; refused-stream retries it).
func isRefusedStream(err error) bool {
	var se http2.StreamError
	return errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream
}

// mirror starts the route's mirrors for an HTTP/2 downstream request. A
// body is mirrored only once complete: the mirror waits (on its own
// goroutine) for the primary to finish reading it, and skips bodies that
// outgrow the replay buffer.
func (h *h2Handler) mirror(d *decision, out *http.Request, rb *replayBody, hasBody bool, timeout time.Duration) {
	m := &mirrorRequest{
		method:       out.Method,
		path:         out.URL.RequestURI(),
		authority:    out.Host,
		header:       out.Header.Clone(),
		timeout:      timeout,
		downstreamH2: true,
	}
	if out.URL.Opaque != "" {
		m.path = out.URL.Opaque
		if out.URL.RawQuery != "" {
			m.path += "?" + out.URL.RawQuery
		}
	}
	if !hasBody {
		h.p.startMirrors(d.action.MirrorPolicies, m)
		return
	}
	if body, ok := rb.complete(); ok {
		m.body = bytes.Clone(body)
		h.p.startMirrors(d.action.MirrorPolicies, m)
	}
	// A body still streaming is not mirrored: a shadow must never hold the
	// primary back, and waiting for the end of an unbounded stream would.
}

// forwardedHeaders sets x-forwarded-for/-proto and x-request-id like the
// HTTP/1.1 path (Envoy's connection manager semantics).
func (h *h2Handler) forwardedHeaders(hdr http.Header) {
	hcm := h.hcm
	remote := h.info.Remote
	if hcm.UseRemoteAddress && !hcm.SkipXffAppend && remote.IsValid() {
		ip := remote.Addr().Unmap().String()
		if xff := hdr["X-Forwarded-For"]; len(xff) > 0 {
			xff[len(xff)-1] += "," + ip
		} else {
			hdr["X-Forwarded-For"] = []string{ip}
		}
	}
	if _, ok := hdr["X-Forwarded-Proto"]; hcm.UseRemoteAddress || !ok {
		hdr["X-Forwarded-Proto"] = []string{h.scheme}
	}
	if hcm.GenerateRequestID {
		_, ok := hdr["X-Request-Id"]
		a := remote.Addr().Unmap()
		edge := hcm.UseRemoteAddress && !(a.IsLoopback() || a.IsPrivate())
		if !ok || (edge && !hcm.PreserveExternalRequestID) {
			var id [36]byte
			newUUID(&id)
			hdr["X-Request-Id"] = []string{string(id[:])}
		}
	}
}

// writeResponse streams resp to the client: headers at once, every body
// chunk flushed as it arrives (gRPC streams must not be buffered), then the
// upstream's trailers.
func (h *h2Handler) writeResponse(w http.ResponseWriter, r *http.Request, resp *http.Response, d *decision, muts []*state.HeaderMutation, fc *policy.FormatContext) {
	out := w.Header()
	for k, vs := range resp.Header {
		out[k] = vs
	}
	h2StripHopByHop(out)
	// Trailers are sent with http.TrailerPrefix below, whether declared or
	// not; a stale declaration would only confuse the client.
	delete(out, "Trailer")
	if _, ok := out["Content-Type"]; !ok {
		out["Content-Type"] = nil // a proxy must not sniff one in
	}
	h.finishHeaders(out, d, muts, fc)

	if resp.ContentLength == 0 {
		// No body: wait for the end of the stream so that a trailers-only
		// response (gRPC errors) stays one HEADERS frame with END_STREAM;
		// gRPC clients reject headers, then an empty end, as a protocol
		// error.
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			if r.Context().Err() != nil {
				return
			}
			panic(http.ErrAbortHandler)
		}
		w.WriteHeader(resp.StatusCode)
		for k, vs := range resp.Trailer {
			out[http.TrailerPrefix+k] = vs
		}
		return
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	_ = rc.Flush() // headers now: gRPC clients wait for them before messages

	bp := h2BufPool.Get().(*[]byte)
	defer h2BufPool.Put(bp)
	buf := *bp
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // client gone (DC): the deferred cancel resets upstream
			}
			if werr := rc.Flush(); werr != nil {
				return
			}
		}
		if rerr == nil {
			continue
		}
		if rerr == io.EOF {
			break
		}
		if r.Context().Err() != nil {
			return // client gone (DC)
		}
		// Upstream reset or timeout after headers went out: reset the
		// client's stream so it cannot mistake a cut body for a whole one
		// (Envoy does the same).
		panic(http.ErrAbortHandler)
	}
	for k, vs := range resp.Trailer {
		out[http.TrailerPrefix+k] = vs
	}
}

// finishHeaders applies response header mutations, the server header and
// debug headers to a response about to be written.
func (h *h2Handler) finishHeaders(out http.Header, d *decision, muts []*state.HeaderMutation, fc *policy.FormatContext) {
	applyMutations(muts, true, fc, httpHeader(out))
	if !h.hcm.ServerHeaderPassThrough {
		name := h.hcm.ServerName
		if name == "" {
			name = "meshlet"
		}
		out["Server"] = []string{name}
	} else if _, ok := out["Server"]; !ok && h.hcm.ServerName != "" {
		out["Server"] = []string{h.hcm.ServerName}
	}
	if h.p.opts.DebugHeaders {
		flags := d.flags
		if flags == "" {
			flags = "-"
		}
		out[textproto.CanonicalMIMEHeaderKey(HeaderResponseFlags)] = []string{flags}
		if d.host != nil {
			out[textproto.CanonicalMIMEHeaderKey(HeaderUpstreamHost)] = []string{d.host.Address}
		}
	}
}

// localReply answers the stream without an upstream: redirect, direct
// response or error. gRPC requests get gRPC-shaped replies.
func (h *h2Handler) localReply(w http.ResponseWriter, d *decision, grpc bool) {
	out := w.Header()
	var fc policy.FormatContext
	h.p.formatContext(&fc, h.info, d, "HTTP/2")
	var mbuf [4]*state.HeaderMutation
	h.finishHeaders(out, d, d.appendMutations(mbuf[:0]), &fc)
	if grpc && d.flags != FlagNone {
		writeGRPCStatus(w, d.grpcCode(), d.body)
		return
	}
	if d.location != "" {
		out["Location"] = []string{d.location}
	}
	if d.body != "" {
		if _, ok := out["Content-Type"]; !ok {
			out["Content-Type"] = []string{"text/plain"}
		}
		out["Content-Length"] = []string{strconv.Itoa(len(d.body))}
	}
	w.WriteHeader(d.status)
	if d.body != "" {
		_, _ = w.Write([]byte(d.body))
	}
}

// h2UpstreamFailure maps an upstream request error (before response
// headers) to the local reply and response flag Envoy would use.
func h2UpstreamFailure(ctx context.Context, err error) (status int, flags, body string) {
	var se http2.StreamError
	switch {
	case context.Cause(ctx) == errH2StreamIdle:
		return http.StatusRequestTimeout, FlagStreamIdleTimeout, BodyStreamTimeout
	case context.Cause(ctx) == errRouteTimeout || errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded:
		return http.StatusGatewayTimeout, FlagUpstreamTimeout, BodyUpstreamTimeout
	case isDialError(err):
		return http.StatusServiceUnavailable, FlagUpstreamConnFailure, BodyConnFailure
	case errors.As(err, &se):
		return http.StatusServiceUnavailable, FlagUpstreamRemoteReset, BodyRemoteReset
	}
	return http.StatusServiceUnavailable, FlagUpstreamConnTerminate, BodyConnTermination
}

// errH2StreamIdle is the cancel cause when a stream saw no body bytes in
// either direction for stream_idle_timeout.
var errH2StreamIdle = errors.New("stream idle timeout")

// h2IdleTimer is a stream's stream_idle_timeout: body bytes in either
// direction push it back.
type h2IdleTimer struct {
	t *time.Timer
	d time.Duration
}

// h2IdleBody resets the stream's idle timer whenever bytes flow.
type h2IdleBody struct {
	io.ReadCloser
	idle *h2IdleTimer
}

func (b *h2IdleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.idle.t.Reset(b.idle.d)
	}
	return n, err
}

// isDialError reports whether err means no upstream connection could be
// opened (Envoy flag UF): the HTTP/2 pool's connect errors, or any pool's
// wrapped error from upstream.Cluster.Dial.
func isDialError(err error) bool {
	if isUpstreamConnectError(err) {
		return true
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

// h2URL builds the upstream URL so that the transport sends path as :path
// byte for byte (no re-escaping).
func h2URL(path, authority string) *url.URL {
	u := &url.URL{Host: authority}
	pathPart, query, hasQuery := strings.Cut(path, "?")
	if strings.HasPrefix(pathPart, "//") || pathPart == "" {
		// Opaque would be printed with the scheme in front; let url keep
		// the raw form instead.
		if pu, err := url.ParseRequestURI(path); err == nil {
			pu.Host = authority
			return pu
		}
		if pathPart == "" {
			pathPart = "/"
		}
	}
	u.Opaque = pathPart
	u.RawQuery = query
	u.ForceQuery = hasQuery && query == ""
	return u
}

// h2Request is the policy.Request view of a downstream HTTP/2 request.
type h2Request struct {
	r      *http.Request
	scheme string
}

func (q *h2Request) Authority() string { return q.r.Host }
func (q *h2Request) Path() string      { return q.r.RequestURI }
func (q *h2Request) Method() string    { return q.r.Method }

func (q *h2Request) Header(name string) (string, bool) {
	switch name {
	case ":authority", "host":
		return q.r.Host, q.r.Host != ""
	case ":path":
		return q.r.RequestURI, true
	case ":method":
		return q.r.Method, true
	case ":scheme":
		return q.scheme, true
	}
	vs, ok := q.r.Header[textproto.CanonicalMIMEHeaderKey(name)]
	if !ok {
		return "", false
	}
	if len(vs) == 1 {
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}
