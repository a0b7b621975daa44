package httpproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshlet/meshlet/state"
	"github.com/meshlet/meshlet/telemetry"
)

// The in-process entry: an application embedding meshlet sends its requests
// through the same request path as a downstream HTTP/2 stream
// (h2Handler.forward: decision, filters, rewrites, retries, timeouts,
// mirrors, header mutations), with no socket in between and on the
// caller's goroutine, as http.Transport.RoundTrip blocks its caller until
// the response head. The upstream response is handed to the application
// as it came from the upstream pool, its header map finished in place;
// nothing is copied through a pipe. What the exchange holds (the pooled
// upstream connection, timers, the fault slot) is released when the
// application has read the body to its end or closed it.

// ErrAborted is returned (as the body's read error, or by RoundTrip before
// a response head) when the data path reset the stream: an upstream reset
// or timeout after the response had started.
var ErrAborted = errors.New("httpproxy: stream reset by the data path")

// errBodyClosed is the upstream context's cancel cause when the
// application closed the response body early.
var errBodyClosed = errors.New("httpproxy: response body closed")

// inprocRemote is the downstream address in-process requests carry: the
// application is local, as a loopback client of a sidecar is.
var inprocRemote = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)

// inprocInfo describes the caller when RoundTrip gets no ConnInfo. The
// handler only reads it.
var inprocInfo = ConnInfo{Remote: inprocRemote, Local: inprocRemote, OriginalDst: inprocRemote, Listener: "inproc"}

// RoundTrip sends req through the HTTP data path of hcm and returns the
// answer: the upstream's response, or a local reply (404 NR, 503 UH, 504
// UT, fault aborts, RBAC denials, redirects...) exactly as a downstream
// client of a listener with this connection manager would get it. info
// describes the caller for RBAC and formatters; nil means a loopback
// plain-text client.
//
// Like http.RoundTripper, RoundTrip does not modify req and closes its
// body. The response body streams: it must be closed, and closing it early
// cancels the upstream request. Trailers are in resp.Trailer once the body
// returned io.EOF. A stream the data path reset after the head (upstream
// reset, timeout) ends the body with an error wrapping ErrAborted.
func (p *Proxy) RoundTrip(req *http.Request, hcm *state.HTTPConnectionManager, info *ConnInfo) (*http.Response, error) {
	if req.URL == nil {
		closeBody(req)
		return nil, errors.New("httpproxy: request has no URL")
	}
	if info == nil {
		info = &inprocInfo
	}
	x := new(inprocExchange)
	x.h = h2Handler{p: p, hcm: hcm, info: info, scheme: schemeOf(info)}
	x.app = req
	x.setRequest(req)
	return x.run()
}

// inprocExchange is one in-process request: the handler, its per-stream
// state and the response body in one allocation.
type inprocExchange struct {
	h    h2Handler
	f    h2Fwd
	r    http.Request // the downstream request the handler sees and edits
	app  *http.Request
	w    inprocLocal
	body inprocBody
}

// setRequest makes x.r the downstream request: a shallow copy of req with
// its own header map (the handler edits it in place) and the server-side
// fields an HTTP/2 server would have filled.
func (x *inprocExchange) setRequest(req *http.Request) {
	r := &x.r
	*r = *req
	r.Header = req.Header.Clone()
	if r.Header == nil {
		r.Header = http.Header{}
	}
	r.RequestURI = req.URL.RequestURI()
	if r.Host == "" {
		r.Host = req.URL.Host
	}
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
	switch {
	case r.Body == nil || r.Body == http.NoBody:
		r.Body = http.NoBody
		r.ContentLength = 0
	case r.ContentLength == 0:
		// A client request's 0 with a body means unknown; to the handler
		// (a server's view) 0 means empty.
		r.ContentLength = -1
	}
	// The handler adds x-forwarded-* and may mutate; hop-by-hop headers an
	// HTTP/2 server would have refused are dropped here.
	h2StripHopByHop(r.Header)
}

func (x *inprocExchange) run() (resp *http.Response, err error) {
	f := &x.f
	f.start = time.Now()
	f.grpc = isGRPCContentType(x.r.Header.Get("Content-Type"))
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				x.h.p.log.Error("in-process request handler panicked", "panic", v)
			}
			x.end(0, nil)
			resp, err = nil, ErrAborted
		}
	}()
	up := x.h.forward(f, &x.w, &x.r)
	if up == nil {
		return x.local()
	}
	hdr := up.Header
	if hdr == nil {
		hdr = http.Header{}
		up.Header = hdr
	}
	for k, vs := range x.w.hdr {
		hdr[k] = vs
	}
	if d := &f.d; d.vh != nil && d.vh.IncludeAttemptCountInResponse {
		hdr["X-Envoy-Attempt-Count"] = []string{attemptCount(f.rs.attempts)}
	}
	x.h.responseHeaders(hdr, &f.d, f.muts, &f.fc)
	x.w.status = up.StatusCode
	x.body = inprocBody{x: x, rc: up.Body, resp: up}
	up.Body = &x.body
	up.Request = x.app
	return up, nil
}

// local builds the response for a reply the handler wrote itself (it is
// complete: local replies are small) and releases the exchange.
func (x *inprocExchange) local() (*http.Response, error) {
	w := &x.w
	if w.status == 0 {
		// Nothing was written: the application's context ended during a
		// fault delay or before an upstream answered.
		x.end(0, nil)
		if err := context.Cause(x.app.Context()); err != nil {
			return nil, err
		}
		return nil, ErrAborted
	}
	hdr := w.hdr
	if hdr == nil {
		hdr = http.Header{}
	}
	var trailer http.Header
	for k, vs := range hdr {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			if trailer == nil {
				trailer = http.Header{}
			}
			trailer[http.CanonicalHeaderKey(name)] = vs
			delete(hdr, k)
		}
	}
	resp := &http.Response{
		Status:        strconv.Itoa(w.status) + " " + http.StatusText(w.status),
		StatusCode:    w.status,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
		Header:        hdr,
		Trailer:       trailer,
		ContentLength: int64(len(w.buf)),
		Body:          http.NoBody,
		Request:       x.app,
	}
	if len(w.buf) > 0 {
		resp.Body = io.NopCloser(bytes.NewReader(w.buf))
	}
	x.end(int64(len(w.buf)), trailer)
	return resp, nil
}

// end releases the exchange and reports it to the sink: once, from
// whichever of the body's end, its close or a local reply comes first.
func (x *inprocExchange) end(sent int64, trailer http.Header) {
	x.f.finish()
	closeBody(x.app)
	if x.h.p.opts.Sink == nil {
		return
	}
	res := streamResult{status: x.w.status, sent: sent, respHdr: x.w.hdr, trailer: trailer}
	if x.body.x != nil {
		res.respHdr = x.body.resp.Header
	}
	if x.r.ContentLength > 0 {
		res.received = x.r.ContentLength
	}
	x.h.recordStream(new(telemetry.HTTPRecord), nil, &x.r, &x.f.d, x.f.start, x.f.grpc, res)
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// inprocLocal is the http.ResponseWriter local replies are written to; it
// keeps the whole reply.
type inprocLocal struct {
	hdr    http.Header
	status int
	buf    []byte
}

func (w *inprocLocal) Header() http.Header {
	if w.hdr == nil {
		w.hdr = http.Header{}
	}
	return w.hdr
}

func (w *inprocLocal) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
}

func (w *inprocLocal) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	w.buf = append(w.buf, b...)
	return len(b), nil
}

// inprocBody is the response body the application reads: the upstream
// body itself, counted, ending the exchange at io.EOF or Close. Reads
// after an upstream failure return an error wrapping ErrAborted.
type inprocBody struct {
	x  *inprocExchange
	rc io.ReadCloser
	// resp is the response handed out. Its Trailer is read only once the
	// upstream body returned io.EOF: the upstream client may set it until
	// then.
	resp *http.Response
	sent atomic.Int64 // bytes the application read
	once sync.Once
}

func (b *inprocBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if n > 0 {
		b.sent.Add(int64(n))
	}
	switch {
	case err == nil:
	case err == io.EOF:
		b.done()
	default:
		b.done()
		if cause := context.Cause(b.x.app.Context()); cause != nil {
			// The application's own context ended the exchange.
			return n, cause
		}
		err = fmt.Errorf("%w: %w", ErrAborted, err)
	}
	return n, err
}

// Close cancels the upstream request if the body was not read to its end
// (the upstream sees a reset or a closed connection, as when a downstream
// client leaves).
func (b *inprocBody) Close() error {
	b.once.Do(func() {
		// Cancel first: a Read blocked in the upstream body returns once
		// the exchange's context is done, so the body's Close below does
		// not wait for the upstream to send.
		if c := b.x.f.cancel; c != nil {
			c(errBodyClosed)
		}
		b.x.end(b.sent.Load(), nil)
	})
	return nil
}

// done ends the exchange after the upstream body ended (at io.EOF with
// the trailers complete, or failed).
func (b *inprocBody) done() { b.once.Do(func() { b.x.end(b.sent.Load(), b.resp.Trailer) }) }
