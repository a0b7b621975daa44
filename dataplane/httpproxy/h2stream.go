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
}

// h2BufPool holds the 32 KiB buffers response bodies are copied through.
var h2BufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (h *h2Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.p
	rq := h2Request{r: r, scheme: h.scheme}
	grpc := isGRPCContentType(r.Header.Get("Content-Type"))

	var d decision
	p.decide(p.routeConfig(h.hcm), &rq, h.info, true, &d)
	if d.local() {
		h.localReply(w, &d, grpc)
		return
	}

	// Upstream request: same method, headers and body; path and authority
	// after the route's rewrites. r.Header is ours to edit: x/net built it
	// for this stream.
	path := r.RequestURI
	if d.action != nil {
		path = policy.RewritePath(d.route, d.action, path)
	}
	authority := r.Host
	if d.action != nil {
		if host, ok := policy.RewriteHost(d.action, &rq, ""); ok {
			authority = host
		}
	}
	hdr := r.Header
	var fc policy.FormatContext
	p.formatContext(&fc, h.info, &d, "HTTP/2")
	applyMutations(d.mutations(), false, &fc, httpHeader(hdr))
	if _, ok := hdr["X-Forwarded-Proto"]; !ok {
		hdr["X-Forwarded-Proto"] = []string{h.scheme}
	}

	ctx := r.Context()
	var cancel context.CancelFunc
	if d.timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, d.timeout)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	// Cancelling resets the upstream stream if it is still open (client
	// reset, write error, or an early return).
	defer cancel()

	out := &http.Request{
		Method:        r.Method,
		URL:           h2URL(path, authority),
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        hdr,
		Body:          r.Body,
		ContentLength: r.ContentLength,
		Host:          authority,
	}
	out = out.WithContext(ctx)

	d.host.Acquire()
	defer d.host.Release()
	var resp *http.Response
	var err error
	if d.proto == state.UpstreamHTTP2 {
		resp, err = p.roundTripH2(ctx, d.ep, out)
	} else {
		out.URL.Scheme = ""
		resp, err = p.roundTripH1(ctx, d.ep, out)
	}
	if err != nil {
		if r.Context().Err() != nil {
			return // DC: the client reset the stream or left; nobody to answer
		}
		status, flags, body := h2UpstreamFailure(ctx, err)
		d.setLocal(status, flags, body)
		h.localReply(w, &d, grpc)
		return
	}
	defer resp.Body.Close()
	h.writeResponse(w, r, resp, &d, &fc)
}

// writeResponse streams resp to the client: headers at once, every body
// chunk flushed as it arrives (gRPC streams must not be buffered), then the
// upstream's trailers.
func (h *h2Handler) writeResponse(w http.ResponseWriter, r *http.Request, resp *http.Response, d *decision, fc *policy.FormatContext) {
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
	h.finishHeaders(out, d, fc)
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
func (h *h2Handler) finishHeaders(out http.Header, d *decision, fc *policy.FormatContext) {
	applyMutations(d.mutations(), true, fc, httpHeader(out))
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
	h.finishHeaders(out, d, &fc)
	if grpc && d.flags != FlagNone {
		writeGRPCLocalReply(w, d.status, d.body)
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
	case errors.Is(err, context.DeadlineExceeded) || ctx.Err() == context.DeadlineExceeded:
		return http.StatusGatewayTimeout, FlagUpstreamTimeout, BodyUpstreamTimeout
	case isUpstreamConnectError(err) || isDialError(err):
		return http.StatusServiceUnavailable, FlagUpstreamConnFailure, BodyConnFailure
	case errors.As(err, &se):
		return http.StatusServiceUnavailable, FlagUpstreamRemoteReset, BodyRemoteReset
	}
	return http.StatusServiceUnavailable, FlagUpstreamConnTerminate, BodyConnTermination
}

// isDialError reports whether err comes from failing to dial (any pool
// that wraps upstream.Cluster.Dial's error with %w).
func isDialError(err error) bool {
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
