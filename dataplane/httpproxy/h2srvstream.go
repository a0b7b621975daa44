package httpproxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshlet/meshlet/telemetry"
)

// h2sStream is one request stream of an h2sConn. Fields after req are
// guarded by the connection's mu.
type h2sStream struct {
	c      *h2sConn
	id     uint32
	opened time.Time // for the premature-reset budget
	ctx    context.Context
	cancel context.CancelFunc
	// upCtx is the handler's context for the upstream exchange: done
	// when ctx is, or when the handler cancels it (upstreamContext).
	upCtx    context.Context
	upCancel context.CancelCauseFunc
	req      *http.Request
	url      url.URL // req.URL, unless parseH2Path fell back
	// vals backs req.Header's values for small requests; four keep the
	// stream in the 1 KiB size class.
	vals [4]string
	body h2sBody
	w    h2sWriter

	rcond        sync.Cond // c.mu: request data, end or reset
	rbuf         []byte    // received, unread request body
	roff         int
	rerr         error // io.EOF after END_STREAM, or why reads fail
	recvDone     bool  // END_STREAM or reset seen: no more DATA expected
	recvWindow   int64
	recvUnacked  int64
	declared     int64 // content-length, -1 if none
	received     int64
	bodyClosed   bool
	needContinue bool

	sendWindow int64
	resetErr   error // set once the stream was reset either way
	ended      bool  // END_STREAM sent

	// rec is the stream's telemetry record (h2telemetry.go).
	rec telemetry.HTTPRecord
	// hdrs is rec.Headers (h2telemetry.go).
	hdrs h2Headers
	// reqMsgs counts gRPC messages in the request body (c.mu).
	reqMsgs grpcFrames
}

// resetLocked fails the stream's body reads and response writes.
func (s *h2sStream) resetLocked(err error) {
	if s.resetErr == nil {
		s.resetErr = err
	}
	if s.rerr == nil || s.rerr == io.EOF {
		s.rerr = err
	}
	s.rcond.Broadcast()
	s.c.cond.Broadcast()
}

// run serves the stream on its own goroutine and closes it afterwards.
func (s *h2sStream) run(h http.Handler) {
	c := s.c
	panicked := true
	defer func() {
		if panicked {
			if e := recover(); e != nil && e != http.ErrAbortHandler {
				buf := make([]byte, 8<<10)
				buf = buf[:runtime.Stack(buf, false)]
				c.h.p.log.Error("http2 handler panic", "listener", c.h.info.Listener, "panic", fmt.Sprint(e), "stack", string(buf))
			}
		}
		s.close(panicked)
	}()
	h.ServeHTTP(&s.w, s.req)
	panicked = false
}

// close finishes the response (or resets the stream after a panic), ends
// the request side, and forgets the stream.
func (s *h2sStream) close(panicked bool) {
	c := s.c
	c.mu.Lock()
	if panicked {
		if s.resetErr == nil && !s.ended {
			c.resetStreamLocked(s.id, http2.ErrCodeInternal)
			s.resetLocked(errH2sStreamClosed)
		}
	} else {
		s.w.finishLocked()
	}
	if !s.recvDone && s.resetErr == nil {
		// The response is complete before the request: stop the client
		// sending (RFC 9113 §8.1).
		c.resetStreamLocked(s.id, http2.ErrCodeNo)
		s.resetLocked(errH2sStreamClosed)
	}
	// Unread body bytes give their connection credit back.
	c.returnCreditLocked(int64(len(s.rbuf) - s.roff))
	s.rbuf, s.roff = nil, 0
	s.bodyClosed = true
	delete(c.streams, s.id)
	c.active--
	c.setIdleLocked()
	if c.goAway && c.active == 0 {
		c.closing = true
		c.kick()
	}
	c.mu.Unlock()
	s.cancelContexts()
}

// cancelContexts cancels the request's context, then the handler's
// upstream context (upstreamContext), in the order a parent context
// cancels its children: whoever sees the upstream context done finds
// r.Context() done too when the client went away.
func (s *h2sStream) cancelContexts() {
	s.cancel()
	s.upCancel(nil)
}

// requestEnded reports whether the client has sent the whole request
// (END_STREAM), or the stream is gone; request_timeout no longer applies.
func (s *h2sStream) requestEnded() bool {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.recvDone
}

// upstreamContext returns the context ServeHTTP cancels to reset the
// upstream request, and its cancel function: it is done when the stream's
// context is, like context.WithCancelCause(r.Context()) for the stream's
// own request r (see onHeaders), without the allocations of a child.
func (w *h2sWriter) upstreamContext(r *http.Request) (context.Context, context.CancelCauseFunc, bool) {
	s := w.s
	if s == nil || s.req != r {
		return nil, nil, false
	}
	return s.upCtx, s.upCancel, true
}

// h2sBody is a stream's request body.
type h2sBody struct{ s *h2sStream }

func (b *h2sBody) Read(p []byte) (int, error) {
	s := b.s
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.bodyClosed {
		return 0, errH2sBodyClosed
	}
	if s.needContinue {
		s.needContinue = false
		if s.resetErr == nil && !s.w.sentHeader {
			c.writeHeadersLocked(s, 100, nil, false)
		}
	}
	for len(s.rbuf) == s.roff {
		if s.rerr != nil {
			return 0, s.rerr
		}
		if c.dead {
			return 0, errH2sConnClosed
		}
		s.rcond.Wait()
	}
	n := copy(p, s.rbuf[s.roff:])
	s.roff += n
	if s.roff == len(s.rbuf) {
		s.rbuf, s.roff = s.rbuf[:0], 0
	}
	c.returnCreditLocked(int64(n))
	if !s.recvDone {
		s.recvUnacked += int64(n)
		if s.recvUnacked >= h2sWindowUpdate {
			_ = c.wfr.WriteWindowUpdate(s.id, uint32(s.recvUnacked))
			s.recvWindow += s.recvUnacked
			s.recvUnacked = 0
			c.kick()
		}
	}
	return n, nil
}

func (b *h2sBody) Close() error {
	s := b.s
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !s.bodyClosed {
		s.bodyClosed = true
		c.returnCreditLocked(int64(len(s.rbuf) - s.roff))
		s.rbuf, s.roff = nil, 0
		s.rcond.Broadcast()
	}
	return nil
}

// h2sWriter is the stream's http.ResponseWriter. Headers go out lazily
// (first Write or Flush, or the handler's return) so that a response
// without body is one HEADERS frame with END_STREAM. Keys with
// http.TrailerPrefix become trailers.
type h2sWriter struct {
	s           *h2sStream
	hdr         http.Header
	status      int
	wroteHeader bool // status fixed
	sentHeader  bool // HEADERS queued
	head        bool // HEAD request: no body

	sent     int64      // body bytes queued, for telemetry
	respMsgs grpcFrames // gRPC messages in the response body
}

func (w *h2sWriter) Header() http.Header { return w.hdr }

func (w *h2sWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code < 200 {
		// Informational responses go out at once; the final one follows.
		c := w.s.c
		c.mu.Lock()
		if w.s.resetErr == nil && !c.dead && code != http.StatusSwitchingProtocols {
			c.writeHeadersLocked(w.s, code, w.hdr, false)
		}
		c.mu.Unlock()
		return
	}
	w.status = code
	w.wroteHeader = true
}

func (w *h2sWriter) bodyAllowed() bool {
	return !w.head && w.status != http.StatusNoContent && w.status != http.StatusNotModified
}

func (w *h2sWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.bodyAllowed() {
		if w.head {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	s := w.s
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := w.sendHeaderLocked(); err != nil {
		return 0, err
	}
	written := 0
	for len(p) > 0 {
		for {
			if s.resetErr != nil {
				return written, s.resetErr
			}
			if c.dead {
				return written, errH2sConnClosed
			}
			if s.sendWindow > 0 && c.sendWindow > 0 && len(c.out) < h2sMaxOut {
				break
			}
			c.cond.Wait()
		}
		n := min(int64(len(p)), s.sendWindow, c.sendWindow, int64(c.peerFrame))
		_ = c.wfr.WriteData(s.id, false, p[:n])
		w.respMsgs.feed(p[:n])
		s.sendWindow -= n
		c.sendWindow -= n
		p = p[n:]
		written += int(n)
		w.sent += n
		c.kick()
	}
	return written, nil
}

// FlushError queues the response headers if they have not gone out yet.
// Data frames are queued by Write; the writer sends whatever is queued.
func (w *h2sWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	c := w.s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	return w.sendHeaderLocked()
}

func (w *h2sWriter) Flush() { _ = w.FlushError() }

func (w *h2sWriter) sendHeaderLocked() error {
	s := w.s
	if s.resetErr != nil {
		return s.resetErr
	}
	if s.c.dead {
		return errH2sConnClosed
	}
	if !w.sentHeader {
		w.sentHeader = true
		s.c.writeHeadersLocked(s, w.status, w.hdr, false)
	}
	return nil
}

// finishLocked ends the response after the handler returned: headers if
// still pending, then trailers or an empty END_STREAM DATA frame.
func (w *h2sWriter) finishLocked() {
	s := w.s
	c := s.c
	if s.resetErr != nil || c.dead || s.ended {
		return
	}
	if !w.wroteHeader {
		w.status, w.wroteHeader = http.StatusOK, true
	}
	hasTrailers := false
	for k, vs := range w.hdr {
		if len(vs) > 0 && strings.HasPrefix(k, http.TrailerPrefix) {
			hasTrailers = true
			break
		}
	}
	if !w.sentHeader {
		w.sentHeader = true
		c.writeHeadersLocked(s, w.status, w.hdr, !hasTrailers)
		if !hasTrailers {
			s.ended = true
			return
		}
	}
	if hasTrailers {
		c.writeTrailersLocked(s, w.hdr)
	} else {
		_ = c.wfr.WriteData(s.id, true, nil)
		c.kick()
	}
	s.ended = true
}

// h2sSkip are response fields never sent on HTTP/2 (RFC 9113 §8.2.2).
func h2sSkip(lk string) bool {
	switch lk {
	case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade", "trailer":
		return true
	}
	return false
}

// wireName returns the lower-case field name for a canonical key, cached
// per connection (HTTP/2 field names are lower case on the wire).
func (c *h2sConn) wireNameLocked(k string) string {
	if lk, ok := c.lower[k]; ok {
		return lk
	}
	lk := strings.ToLower(k)
	if len(c.lower) < 256 {
		c.lower[k] = lk
	}
	return lk
}

// writeHeadersLocked encodes :status and hdr (without trailer keys) as
// HEADERS + CONTINUATION frames.
func (c *h2sConn) writeHeadersLocked(s *h2sStream, status int, hdr http.Header, end bool) {
	c.hbuf = c.hbuf[:0]
	_ = c.henc.WriteField(hpack.HeaderField{Name: ":status", Value: h2sStatus(status)})
	for k, vs := range hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		lk := c.wireNameLocked(k)
		if h2sSkip(lk) {
			continue
		}
		for _, v := range vs {
			_ = c.henc.WriteField(hpack.HeaderField{Name: lk, Value: v})
		}
	}
	c.writeBlockLocked(s.id, end)
}

// writeTrailersLocked sends the TrailerPrefix keys of hdr with END_STREAM.
func (c *h2sConn) writeTrailersLocked(s *h2sStream, hdr http.Header) {
	c.hbuf = c.hbuf[:0]
	for k, vs := range hdr {
		name, ok := strings.CutPrefix(k, http.TrailerPrefix)
		if !ok {
			continue
		}
		lk := c.wireNameLocked(name)
		if h2sSkip(lk) {
			continue
		}
		for _, v := range vs {
			_ = c.henc.WriteField(hpack.HeaderField{Name: lk, Value: v})
		}
	}
	c.writeBlockLocked(s.id, true)
}

// writeBlockLocked frames the encoded block in hbuf.
func (c *h2sConn) writeBlockLocked(id uint32, end bool) {
	block := c.hbuf
	first := true
	for first || len(block) > 0 {
		n := min(len(block), c.peerFrame)
		frag := block[:n]
		block = block[n:]
		if first {
			_ = c.wfr.WriteHeaders(http2.HeadersFrameParam{
				StreamID: id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0,
			})
			first = false
		} else {
			_ = c.wfr.WriteContinuation(id, len(block) == 0, frag)
		}
	}
	c.kick()
}

// h2sStatus formats a status code without allocating for common ones.
func h2sStatus(code int) string {
	switch code {
	case 200:
		return "200"
	case 204:
		return "204"
	case 404:
		return "404"
	case 503:
		return "503"
	}
	return strconv.Itoa(code)
}
