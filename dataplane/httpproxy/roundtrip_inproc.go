package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"github.com/meshlet/meshlet/state"
)

// The in-process entry: an application embedding meshlet sends its requests
// through the same connection manager as a downstream HTTP/2 stream, with
// no socket in between. It runs h2Handler.ServeHTTP, the HTTP/2 path's
// per-stream handler that already works on *http.Request, so routing,
// filters, retries, timeouts, mirrors and header mutations are the proxy's
// own code, not a copy.

// ErrAborted is returned (as the body's read error, or by RoundTrip before
// a response head) when the data path reset the stream: an upstream reset
// or timeout after the response had started.
var ErrAborted = errors.New("httpproxy: stream reset by the data path")

// errBodyClosed tells the handler the application closed the response
// body: to the handler it looks like a client that went away (DC).
var errBodyClosed = errors.New("httpproxy: response body closed")

// inprocRemote is the downstream address in-process requests carry: the
// application is local, as a loopback client of a sidecar is.
var inprocRemote = netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)

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
// returned io.EOF.
func (p *Proxy) RoundTrip(req *http.Request, hcm *state.HTTPConnectionManager, info *ConnInfo) (*http.Response, error) {
	if req.URL == nil {
		closeBody(req)
		return nil, errors.New("httpproxy: request has no URL")
	}
	if info == nil {
		info = &ConnInfo{Remote: inprocRemote, Local: inprocRemote, OriginalDst: inprocRemote, Listener: "inproc"}
	}
	ctx, cancel := context.WithCancel(req.Context())
	in := inprocRequest(ctx, req)
	h := &h2Handler{p: p, hcm: hcm, info: info, scheme: schemeOf(info)}

	pipe := newInprocPipe()
	w := &inprocWriter{hdr: http.Header{}, ready: make(chan struct{}), pw: pipe, req: req,
		body: &inprocBody{pr: pipe, cancel: cancel}}
	go w.serve(h, in, p)

	select {
	case <-w.ready:
	case <-req.Context().Done():
		// The handler sees the same cancellation and ends on its own; the
		// head may still arrive, but nobody will read it.
		cancel()
		go func() {
			<-w.ready
			if w.resp != nil {
				w.resp.Body.Close()
			}
		}()
		return nil, context.Cause(req.Context())
	}
	if w.err != nil {
		cancel()
		return nil, w.err
	}
	return w.resp, nil
}

// inprocRequest is the downstream request the handler sees: a shallow copy
// of req with its own header map (the handler edits it in place) and the
// server-side fields x/net would have filled.
func inprocRequest(ctx context.Context, req *http.Request) *http.Request {
	r := req.Clone(ctx)
	r.RequestURI = req.URL.RequestURI()
	if r.Host == "" {
		r.Host = req.URL.Host
	}
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
	if r.Body == nil {
		r.Body = http.NoBody
		r.ContentLength = 0
	}
	// The handler adds x-forwarded-* and may mutate; hop-by-hop headers an
	// HTTP/2 server would have refused are dropped here.
	h2StripHopByHop(r.Header)
	return r
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// inprocWriter is the http.ResponseWriter of one in-process request. The
// head is handed to RoundTrip at WriteHeader; the body goes through a
// bounded pipe, so the handler's flushes reach the application as they
// happen (gRPC streaming).
type inprocWriter struct {
	hdr  http.Header
	req  *http.Request
	pw   *inprocPipe
	body *inprocBody

	// resp and err are written before ready is closed and read after.
	ready chan struct{}
	once  sync.Once
	resp  *http.Response
	err   error
}

func (w *inprocWriter) Header() http.Header { return w.hdr }

func (w *inprocWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		return // informational heads are not delivered through RoundTrip
	}
	w.once.Do(func() {
		h := make(http.Header, len(w.hdr))
		for k, vs := range w.hdr {
			if strings.HasPrefix(k, http.TrailerPrefix) || vs == nil {
				continue
			}
			h[k] = append([]string(nil), vs...)
		}
		cl := int64(-1)
		if v := h.Get("Content-Length"); v != "" {
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				cl = n
			}
		}
		w.resp = &http.Response{
			Status:        fmt.Sprintf("%d %s", code, http.StatusText(code)),
			StatusCode:    code,
			Proto:         "HTTP/2.0",
			ProtoMajor:    2,
			Header:        h,
			Trailer:       http.Header{},
			Body:          w.body,
			ContentLength: cl,
			Request:       w.req,
		}
		close(w.ready)
	})
}

func (w *inprocWriter) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.pw.Write(b)
}

// Flush is a no-op: the pipe hands every write to the reader directly.
func (w *inprocWriter) Flush() {}

// serve runs the handler and ends the body: trailers first, then EOF (or
// ErrAborted when the handler reset the stream).
func (w *inprocWriter) serve(h *h2Handler, r *http.Request, p *Proxy) {
	aborted := false
	defer func() {
		if v := recover(); v != nil {
			aborted = true
			if v != http.ErrAbortHandler {
				p.log.Error("in-process request handler panicked", "panic", v)
			}
		}
		r.Body.Close()
		if aborted {
			w.once.Do(func() {
				w.err = ErrAborted
				close(w.ready)
			})
		} else {
			w.WriteHeader(http.StatusOK) // returned without writing: 200, as net/http
		}
		if w.resp != nil {
			for k, vs := range w.hdr {
				if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
					w.resp.Trailer[http.CanonicalHeaderKey(name)] = vs
				}
			}
		}
		if aborted {
			w.pw.closeWrite(ErrAborted)
		} else {
			w.pw.closeWrite(nil)
		}
	}()
	h.ServeHTTP(w, r)
}

// inprocBody is the response body: reading pulls from the handler, closing
// cancels the request's context so the upstream stream is reset.
type inprocBody struct {
	pr     *inprocPipe
	cancel context.CancelFunc
}

func (b *inprocBody) Read(p []byte) (int, error) { return b.pr.Read(p) }

func (b *inprocBody) Close() error {
	b.pr.closeRead(errBodyClosed)
	b.cancel()
	return nil
}

// inprocBufMax bounds the response bytes queued for the application.
const inprocBufMax = 64 << 10

// inprocPipe carries a response body from the handler to the application.
// Unlike io.Pipe, a write returns once its bytes are queued (up to
// inprocBufMax), so the handler finishes a small response without waiting
// for the application's goroutine to be scheduled, and the application
// then reads it all at once: two goroutine switches fewer per request. The
// bound is the streaming backpressure io.Pipe gave.
type inprocPipe struct {
	mu   sync.Mutex
	cond sync.Cond
	buf  []byte
	off  int
	werr error // the writer closed: io.EOF, or why the stream ended
	rerr error // the reader closed: writes fail with it
}

func newInprocPipe() *inprocPipe {
	p := &inprocPipe{}
	p.cond.L = &p.mu
	return p
}

func (p *inprocPipe) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for len(b) > 0 {
		switch {
		case p.rerr != nil:
			return n, p.rerr
		case p.werr != nil:
			return n, io.ErrClosedPipe
		}
		room := inprocBufMax - (len(p.buf) - p.off)
		if room <= 0 {
			p.cond.Wait()
			continue
		}
		k := min(room, len(b))
		p.buf = append(p.buf, b[:k]...)
		b = b[k:]
		n += k
		p.cond.Broadcast()
	}
	return n, nil
}

// Read returns queued bytes, then the writer's close (io.EOF or the
// abort); after the reader's own close it returns io.ErrClosedPipe.
func (p *inprocPipe) Read(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.off == len(p.buf) {
		switch {
		case p.rerr != nil:
			return 0, io.ErrClosedPipe
		case p.werr != nil:
			return 0, p.werr
		}
		p.cond.Wait()
	}
	n := copy(b, p.buf[p.off:])
	p.off += n
	if p.off == len(p.buf) {
		p.buf, p.off = p.buf[:0], 0
	}
	p.cond.Broadcast() // room for a blocked writer
	return n, nil
}

// closeWrite ends the body: err nil is a normal end (io.EOF).
func (p *inprocPipe) closeWrite(err error) {
	if err == nil {
		err = io.EOF
	}
	p.mu.Lock()
	if p.werr == nil {
		p.werr = err
	}
	p.cond.Broadcast()
	p.mu.Unlock()
}

// closeRead drops what is queued and fails later writes with err.
func (p *inprocPipe) closeRead(err error) {
	p.mu.Lock()
	if p.rerr == nil {
		p.rerr = err
	}
	p.buf, p.off = nil, 0
	p.cond.Broadcast()
	p.mu.Unlock()
}
