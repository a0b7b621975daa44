package httpproxy

import (
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

	// Header values every stream sets, built once by prepare (nil: built
	// per stream). Each has len == cap, so an append copies it out;
	// nothing writes into a header value slice in place.
	server []string // Server, when not passed through
	xfp    []string // X-Forwarded-Proto
	// xfcc is the connection's x-forwarded-client-cert treatment, valid
	// when xfccReady; xfccSet is its element as a header value.
	xfcc      xfccPlan
	xfccReady bool
	xfccSet   []string
}

// prepare builds the per-connection header values (see h2Handler).
func (h *h2Handler) prepare() {
	h.server = []string{h.serverName()}
	h.xfp = []string{h.scheme}
	h.xfcc, h.xfccReady = planXFCC(h.hcm, h.info), true
	if h.xfcc.act == xfccSet {
		h.xfccSet = []string{h.xfcc.elem}
	}
}

func (h *h2Handler) serverName() string {
	if h.hcm.ServerName == "" {
		return "meshlet"
	}
	return h.hcm.ServerName
}

// Canonical forms of the debug header names.
var (
	canonResponseFlags = textproto.CanonicalMIMEHeaderKey(HeaderResponseFlags)
	canonUpstreamHost  = textproto.CanonicalMIMEHeaderKey(HeaderUpstreamHost)
)

// h2BufPool holds the 32 KiB buffers response bodies are copied through.
var h2BufPool = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// h2Fwd is the per-stream state of ServeHTTP that would otherwise escape
// to the heap piece by piece (the decision, timeouts, retry state, the
// upstream request and its URL, idle wrappers): one allocation per stream.
// It is not pooled: mirrors and the upstream HTTP/2 client may still hold
// the request after the handler returned.
type h2Fwd struct {
	rq       h2Request
	d        decision
	to       requestTimeouts
	rs       retryState
	x        rtExchange
	out      http.Request
	url      url.URL
	timer    h2StreamTimer
	reqBody  h2TimedBody
	respBody h2TimedBody
	mbuf     [4]*state.HeaderMutation
	muts     []*state.HeaderMutation
	fc       policy.FormatContext
	start    time.Time
	grpc     bool

	// What finish undoes, set as forward gets that far.
	cancel      context.CancelCauseFunc
	stopOverall func() bool
	rsInit      bool
	res         rtAttempt
	upBody      io.ReadCloser // the upstream response body, once forward returned it
}

// finish releases what forward acquired, latest first: the upstream body
// (returning its connection), the attempt and retry accounting, the
// timers, the upstream context, the fault slot. It runs when the response
// has been relayed (ServeHTTP) or its body consumed (the in-process path).
func (f *h2Fwd) finish() {
	if f.upBody != nil {
		f.upBody.Close()
		f.res.done()
	}
	if f.rsInit {
		f.rs.done()
	}
	f.timer.stop()
	if f.stopOverall != nil {
		f.stopOverall()
	}
	if f.cancel != nil {
		f.cancel(nil)
	}
	f.d.releaseFaults()
}

func (h *h2Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f := new(h2Fwd)
	f.start = time.Now()
	f.grpc = isGRPCContentType(r.Header.Get("Content-Type"))
	if h.p.opts.Sink != nil {
		defer h.record(w, r, &f.d, f.start, f.grpc) // h2telemetry.go
	}
	defer f.finish()
	if resp := h.forward(f, w, r); resp != nil {
		if d := &f.d; d.vh != nil && d.vh.IncludeAttemptCountInResponse {
			w.Header()["X-Envoy-Attempt-Count"] = []string{attemptCount(f.rs.attempts)}
		}
		h.writeResponse(w, r, resp, &f.d, f.muts, &f.fc)
	}
}

// forward runs the request path of one stream: decision, filters, the
// upstream request with its rewrites, retries and timeouts. It returns the
// upstream response (head read, body streaming) for the caller to relay,
// or nil once it answered locally through w (or the client left). What it
// acquired is released by f.finish, which the caller must run.
func (h *h2Handler) forward(f *h2Fwd, w http.ResponseWriter, r *http.Request) *http.Response {
	p := h.p
	start, grpc := f.start, f.grpc
	f.rq = h2Request{r: r, scheme: h.scheme}
	rq := &f.rq

	d := &f.d
	p.decideHCM(h.hcm, rq, h.info, true, d)
	if !p.runFilters(r.Context(), h.hcm, rq, d, nil) {
		return nil
	}
	if d.local() {
		h.localReply(w, d, grpc)
		return nil
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
			if host, ok := policy.RewriteHost(a, rq, d.host.Hostname); ok {
				authority = host
			}
		}
	}
	muts := d.appendMutations(f.mbuf[:0])
	f.muts = muts
	fc := &f.fc
	p.formatContext(fc, h.info, d, "HTTP/2")
	hdr := r.Header
	h.forwardedHeaders(hdr)
	applyMutations(muts, false, fc, httpHeader(hdr))

	rp := policy.EffectiveRetryPolicy(d.vh, d.action)
	to := &f.to
	computeTimeouts(to, d, rq, grpc, h.hcm.StreamIdleTimeout)
	if d.vh != nil && d.vh.IncludeAttemptCount {
		delete(hdr, "X-Envoy-Attempt-Count")
	}

	// Cancelling ctx resets the upstream stream if it is still open (client
	// reset, write error, timeouts, or an early return).
	ctx, cancelCause, ok := context.Context(nil), context.CancelCauseFunc(nil), false
	if sw, isH2s := w.(*h2sWriter); isH2s {
		ctx, cancelCause, ok = sw.upstreamContext(r)
	}
	if !ok {
		ctx, cancelCause = context.WithCancelCause(r.Context())
	}
	f.cancel = cancelCause
	overall, stopOverall := armOverall(to, start, cancelCause)
	f.stopOverall = stopOverall
	body := r.Body
	hasBody := body != nil && body != http.NoBody
	// One timer per stream serves stream_idle_timeout and request_timeout
	// (a request without body is complete already).
	var rt time.Duration
	if hasBody {
		rt = h.hcm.RequestTimeout
	}
	if to.idle > 0 || rt > 0 {
		var stream *h2sStream
		if sw, isH2s := w.(*h2sWriter); isH2s {
			stream = sw.s
		}
		f.timer.arm(start, to.idle, rt, stream, cancelCause)
		if hasBody {
			f.reqBody = h2TimedBody{ReadCloser: body, t: &f.timer, req: true}
			body = &f.reqBody
		}
	}
	mirrors := d.action != nil && len(d.action.MirrorPolicies) > 0
	var rb *replayBody
	if hasBody && (rp != nil || mirrors) {
		rb = newReplayBody(body, maxReplayBody)
	}

	out := &f.out
	*out = http.Request{
		Method:        r.Method,
		URL:           h2URLInto(&f.url, path, authority),
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        hdr,
		Body:          body,
		ContentLength: r.ContentLength,
		Host:          authority,
	}

	rs := &f.rs
	rs.init(rp, d.cluster)
	f.rsInit = true
	f.x = rtExchange{d: d, rs: rs, rp: rp, to: to, out: out, rb: rb, hasBody: hasBody,
		overall: overall, down: r.Context(), downstreamH2: true}
	resp, res, outcome := p.exchangeRT(ctx, &f.x)
	switch outcome {
	case rtOverflow:
		w.Header()["X-Envoy-Overloaded"] = []string{"true"}
		d.setLocal(503, rs.finalFlags(FlagUpstreamOverflow), BodyOverflow)
		h.localReply(w, d, grpc)
		return nil
	case rtNoHealthy:
		d.setLocal(503, rs.finalFlags(FlagNoHealthyUpstream), BodyNoHealthyUpstream)
		h.localReply(w, d, grpc)
		return nil
	case rtDownstreamGone:
		return nil // DC: the client reset the stream or left; nobody to answer
	case rtFailed:
		if context.Cause(ctx) == errStreamDuration {
			h.finishHeaders(w.Header(), d, muts, fc)
			if grpc {
				writeGRPCStatus(w, grpcDeadlineExceeded, BodyDurationTimeout)
				return nil
			}
			d.setLocal(http.StatusRequestTimeout, FlagNone, BodyDurationTimeout)
			h.localReply(w, d, false)
			return nil
		}
		d.setLocal(rtFailure(ctx, &res, rs))
		if grpc && grpcDeadlinePassed(r.Header, start) {
			h.finishHeaders(w.Header(), d, muts, fc)
			writeGRPCStatus(w, grpcDeadlineExceeded, "deadline exceeded")
			return nil
		}
		h.localReply(w, d, grpc)
		return nil
	}
	f.res = res
	if f.timer.idle > 0 {
		f.respBody = h2TimedBody{ReadCloser: resp.Body, t: &f.timer}
		resp.Body = &f.respBody
	}
	f.upBody = resp.Body
	return resp
}

// Cancel causes of a stream's context.
var (
	errRouteTimeout   = errors.New("route timeout")
	errStreamDuration = errors.New("max stream duration")
	errPerTryTimeout  = errors.New("per-try timeout")
)

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
		if h.xfp != nil {
			hdr["X-Forwarded-Proto"] = h.xfp
		} else {
			hdr["X-Forwarded-Proto"] = []string{h.scheme}
		}
	}
	h.forwardXFCC(hdr)
	if hcm.GenerateRequestID {
		_, ok := hdr["X-Request-Id"]
		edge := hcm.UseRemoteAddress && !internalAddr(remote.Addr())
		if !ok || (edge && !hcm.PreserveExternalRequestID) {
			var id [36]byte
			newUUID(&id)
			hdr["X-Request-Id"] = []string{string(id[:])}
		}
	}
}

// forwardXFCC applies the connection's x-forwarded-client-cert treatment.
// A handler without prepare (in-process RoundTrip) plans per request.
func (h *h2Handler) forwardXFCC(hdr http.Header) {
	plan := &h.xfcc
	if !h.xfccReady {
		p := planXFCC(h.hcm, h.info)
		plan = &p
	}
	switch plan.act {
	case xfccRemove:
		delete(hdr, canonHeaderXFCC)
	case xfccSet:
		if h.xfccSet != nil {
			hdr[canonHeaderXFCC] = h.xfccSet
		} else {
			hdr[canonHeaderXFCC] = []string{plan.elem}
		}
	case xfccAppend:
		if vs := hdr[canonHeaderXFCC]; len(vs) > 0 {
			vs[len(vs)-1] = appendXFCCValue(vs[len(vs)-1], plan.elem)
		} else {
			hdr[canonHeaderXFCC] = []string{plan.elem}
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
	h.responseHeaders(out, d, muts, fc)
	if _, ok := out["Content-Type"]; !ok {
		out["Content-Type"] = nil // a proxy must not sniff one in
	}

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
			out[trailerKey(k)] = vs
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
		out[trailerKey(k)] = vs
	}
}

// trailerKey is http.TrailerPrefix+k, without building the string for
// gRPC's trailers.
func trailerKey(k string) string {
	switch k {
	case "Grpc-Status":
		return http.TrailerPrefix + "Grpc-Status"
	case "Grpc-Message":
		return http.TrailerPrefix + "Grpc-Message"
	case "Grpc-Status-Details-Bin":
		return http.TrailerPrefix + "Grpc-Status-Details-Bin"
	}
	return http.TrailerPrefix + k
}

// responseHeaders turns an upstream response's header map into the one
// the client gets: hop-by-hop fields and the Trailer declaration dropped
// (trailers are delivered whether declared or not; a stale declaration
// would only confuse the client), then finishHeaders.
func (h *h2Handler) responseHeaders(out http.Header, d *decision, muts []*state.HeaderMutation, fc *policy.FormatContext) {
	h2StripHopByHop(out)
	delete(out, "Trailer")
	h.finishHeaders(out, d, muts, fc)
}

// finishHeaders applies response header mutations, the server header and
// debug headers to a response about to be written.
func (h *h2Handler) finishHeaders(out http.Header, d *decision, muts []*state.HeaderMutation, fc *policy.FormatContext) {
	applyMutations(muts, true, fc, httpHeader(out))
	if !h.hcm.ServerHeaderPassThrough {
		if h.server != nil {
			out["Server"] = h.server
		} else {
			out["Server"] = []string{h.serverName()}
		}
	} else if _, ok := out["Server"]; !ok && h.hcm.ServerName != "" {
		out["Server"] = []string{h.hcm.ServerName}
	}
	if h.p.opts.DebugHeaders {
		flags := d.flags
		if flags == "" {
			flags = "-"
		}
		out[canonResponseFlags] = []string{flags}
		if d.host != nil {
			out[canonUpstreamHost] = []string{d.host.Address}
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
	case context.Cause(ctx) == errRequestTimeout:
		// As the HTTP/1.1 path answers a request that did not arrive in
		// time (h1server.go).
		return http.StatusRequestTimeout, FlagStreamIdleTimeout, BodyRequestTimeout
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
	return h2URLInto(new(url.URL), path, authority)
}

// h2URLInto is h2URL filling u (usually part of a larger allocation).
func h2URLInto(u *url.URL, path, authority string) *url.URL {
	*u = url.URL{Host: authority}
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
	vs, ok := lookupCanonical(q.r.Header, name)
	if !ok {
		return "", false
	}
	if len(vs) == 1 {
		return vs[0], true
	}
	return strings.Join(vs, ","), true
}

// lookupCanonical is h[textproto.CanonicalMIMEHeaderKey(name)] without
// allocating the canonical key: it is built in a stack buffer, and a map
// index by string(bytes) does not copy them. Names that
// CanonicalMIMEHeaderKey leaves alone (non-token bytes) are looked up as
// they are.
func lookupCanonical(h http.Header, name string) ([]string, bool) {
	var buf [64]byte
	if len(name) > len(buf) {
		vs, ok := h[textproto.CanonicalMIMEHeaderKey(name)]
		return vs, ok
	}
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !tchar[c] {
			vs, ok := h[name]
			return vs, ok
		}
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
		upper = c == '-'
	}
	vs, ok := h[string(buf[:len(name)])]
	return vs, ok
}
