package httpproxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2cliStream is one request on an h2cliConn. The response and its body
// live in the same allocation. Fields from stop on are guarded by c.mu.
type h2cliStream struct {
	c    *h2cliConn
	id   uint32
	req  *http.Request
	resp http.Response
	body h2cliBody
	ctx  context.Context
	// head is closed once the response head arrived or the stream failed
	// before it: RoundTrip waits on it and on the context.
	head chan struct{}
	// Header values of the response head and trailers when they are few:
	// the maps' slices point here instead of into allocations of their own.
	hvals [8]string
	tvals [4]string

	stop       func() bool // stops the context watch, once one was needed
	headDone   bool        // head is closed
	rcond      sync.Cond   // c.mu: head, data, end or reset arrived
	gotHead    bool
	rbuf       []byte
	roff       int
	small      [256]byte // rbuf's first backing: small bodies allocate nothing
	rerr       error     // io.EOF after END_STREAM, or why reads fail
	recvDone   bool      // END_STREAM or reset seen
	sentEnd    bool      // END_STREAM sent (or nothing more will be)
	resetErr   error     // set once the stream was reset either way
	finished   bool      // forgotten by the connection
	bodyClosed bool
	recvWindow int64
	recvUnack  int64
	sendWindow int64
}

// resetLocked fails the stream's reads and writes with err (reads keep a
// body that already ended).
func (s *h2cliStream) resetLocked(err error) {
	if s.resetErr == nil {
		s.resetErr = err
	}
	if s.rerr == nil {
		s.rerr = err
	}
	s.recvDone, s.sentEnd = true, true
	s.headDoneLocked()
	s.rcond.Broadcast()
	s.c.cond.Broadcast()
}

// headDoneLocked wakes RoundTrip.
func (s *h2cliStream) headDoneLocked() {
	if !s.headDone && s.head != nil {
		s.headDone = true
		close(s.head)
	}
}

// watchLocked makes the stream's context reset it from now on. It is
// registered only when a caller is about to block: a unary exchange whose
// response is already buffered when it is read never pays for it.
func (s *h2cliStream) watchLocked() {
	if s.stop == nil && !s.finished && s.ctx.Done() != nil {
		s.stop = context.AfterFunc(s.ctx, s.cancelled)
	}
}

// endRecvLocked marks the response complete.
func (s *h2cliStream) endRecvLocked() {
	s.recvDone = true
	if s.rerr == nil {
		s.rerr = io.EOF
	}
	if s.sentEnd {
		s.finishLocked()
	}
}

// finishLocked forgets a stream that is over both ways: it no longer
// counts against the peer's stream limit.
func (s *h2cliStream) finishLocked() {
	if s.finished || s.id == 0 {
		return
	}
	s.finished = true
	c := s.c
	delete(c.streams, s.id)
	if s.stop != nil {
		s.stop()
	}
	if len(c.streams) == 0 {
		c.lastIdle = time.Now()
		c.closeIfIdleLocked()
	}
	c.cond.Broadcast()
}

// cancelled runs when the request's context ends: the stream is reset
// with CANCEL if it is still open.
func (s *h2cliStream) cancelled() {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	err := context.Cause(s.ctx)
	if s.id == 0 {
		if s.resetErr == nil {
			s.resetErr = err
		}
		c.cond.Broadcast()
		return
	}
	if s.finished {
		if s.rerr == io.EOF && s.roff < len(s.rbuf) {
			return // complete and buffered: the reader may finish
		}
		s.resetLocked(err)
		return
	}
	c.resetStreamLocked(s, http2.ErrCodeCancel, err)
}

// RoundTrip sends req on a new stream and returns once the response head
// arrived. The body streams; trailers are in resp.Trailer after it
// returned io.EOF. req's context cancels the stream.
func (c *h2cliConn) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	hasBody := req.Body != nil && req.Body != http.NoBody
	if err := ctx.Err(); err != nil {
		if hasBody {
			req.Body.Close()
		}
		return nil, err
	}
	s := &h2cliStream{c: c, req: req, ctx: ctx, head: make(chan struct{})}
	s.rcond.L = &c.mu
	c.mu.Lock()
	if c.reserved > 0 {
		c.reserved--
	}
	for !c.dead && !c.goAway && !c.closing && s.resetErr == nil && len(c.streams) >= int(c.peerStreams) {
		// The peer lowered its limit below what the pool reserved.
		s.watchLocked()
		c.cond.Wait()
	}
	if err := c.openLocked(s, hasBody); err != nil {
		if s.stop != nil {
			s.stop()
		}
		c.mu.Unlock()
		if hasBody {
			req.Body.Close()
		}
		return nil, err
	}
	c.mu.Unlock()
	if hasBody {
		c.startBody(s)
	}

	if done := ctx.Done(); done != nil {
		select {
		case <-s.head:
		case <-done:
			c.mu.Lock()
			if !s.finished {
				c.resetStreamLocked(s, http2.ErrCodeCancel, context.Cause(ctx))
			} else {
				s.resetLocked(context.Cause(ctx))
				s.bodyClosed = true
			}
			c.mu.Unlock()
			return nil, ctx.Err()
		}
	} else {
		<-s.head
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !s.gotHead {
		return nil, s.resetErr
	}
	return &s.resp, nil
}

// openLocked checks the connection can take the stream, then queues its
// HEADERS (END_STREAM when there is no body). Nothing reached the peer
// when it fails: the stream is refused, so the router may retry it.
func (c *h2cliConn) openLocked(s *h2cliStream, hasBody bool) error {
	switch {
	case s.resetErr != nil:
		return s.resetErr
	case c.dead || c.closing || c.goAway:
		return http2.StreamError{Code: http2.ErrCodeRefusedStream, Cause: errH2cClosed}
	case c.nextID >= 1<<31-1:
		c.goAway = true
		return http2.StreamError{Code: http2.ErrCodeRefusedStream, Cause: errH2cIdRange}
	}
	if err := c.encodeRequestLocked(s.req, hasBody); err != nil {
		return err
	}
	s.id = c.nextID
	c.nextID += 2
	s.sendWindow = c.peerWindow
	s.recvWindow = h2cStreamWindow
	s.sentEnd = !hasBody
	c.streams[s.id] = s
	c.writeBlockLocked(s.id, !hasBody)
	return nil
}

// encodeRequestLocked HPACK-encodes req's head into c.hbuf. Everything is
// checked before the first field is encoded: the encoder's dynamic table
// must only change for a block that is sent.
func (c *h2cliConn) encodeRequestLocked(req *http.Request, hasBody bool) error {
	if req.Method != http.MethodConnect {
		if path := req.URL.RequestURI(); path == "" || (path[0] != '/' && path != "*") {
			return fmt.Errorf("http2: invalid request :path %q", path)
		}
	}
	size, err := c.requestFieldsLocked(req, hasBody, false)
	if err != nil {
		return err
	}
	if c.peerHdrList > 0 && size > int(c.peerHdrList) {
		return fmt.Errorf("http2: request header list of %d bytes over the peer's limit of %d", size, c.peerHdrList)
	}
	c.hbuf = c.hbuf[:0]
	_, _ = c.requestFieldsLocked(req, hasBody, true)
	return nil
}

// requestFieldsLocked walks req's header fields as they go on the wire:
// it encodes them when encode is set, else validates them and returns the
// header list size (RFC 9113 §6.5.2).
func (c *h2cliConn) requestFieldsLocked(req *http.Request, hasBody, encode bool) (int, error) {
	size := 0
	field := func(name, value string) {
		size += len(name) + len(value) + 32
		if encode {
			_ = c.henc.WriteField(hpack.HeaderField{Name: name, Value: value})
		}
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if req.Method == http.MethodConnect {
		field(":method", req.Method)
		field(":authority", host)
	} else {
		scheme := req.URL.Scheme
		if scheme == "" {
			scheme = "http"
		}
		method := req.Method
		if method == "" {
			method = http.MethodGet
		}
		field(":method", method)
		field(":scheme", scheme)
		field(":authority", host)
		field(":path", req.URL.RequestURI())
	}
	for k, vs := range req.Header {
		lk := c.wireNameLocked(k)
		switch lk {
		case "host", "content-length", "connection", "proxy-connection", "keep-alive",
			"transfer-encoding", "upgrade", "trailer":
			continue
		case "te":
			// Only "te: trailers" may be sent (RFC 9113 §8.2.2).
			for _, v := range vs {
				if strings.EqualFold(strings.TrimSpace(v), "trailers") {
					field("te", "trailers")
					break
				}
			}
			continue
		}
		if !encode && !httpguts.ValidHeaderFieldName(k) {
			return 0, fmt.Errorf("http2: invalid request header name %q", k)
		}
		for _, v := range vs {
			if !encode && !httpguts.ValidHeaderFieldValue(v) {
				return 0, fmt.Errorf("http2: invalid value of request header %q", k)
			}
			field(lk, v)
		}
	}
	if hasTrailers(req) {
		for k := range req.Trailer {
			field("trailer", c.wireNameLocked(k))
		}
	}
	// A zero length with a body means unknown (net/http's convention).
	if n := req.ContentLength; n > 0 {
		field("content-length", strconv.FormatInt(n, 10))
	} else if n == 0 && !hasBody && (req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch) {
		field("content-length", "0")
	}
	return size, nil
}

func hasTrailers(req *http.Request) bool {
	for _, vs := range req.Trailer {
		if len(vs) > 0 {
			return true
		}
	}
	return false
}

// wireNameLocked returns the lower-case field name for a header key,
// cached per connection.
func (c *h2cliConn) wireNameLocked(k string) string {
	if lk, ok := c.lower[k]; ok {
		return lk
	}
	lk := strings.ToLower(k)
	if len(c.lower) < 256 {
		c.lower[k] = lk
	}
	return lk
}

// writeBlockLocked frames the encoded block in hbuf as HEADERS and
// CONTINUATION frames.
func (c *h2cliConn) writeBlockLocked(id uint32, end bool) {
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

// startBody hands the request body to an idle worker of the connection,
// or to a new one. The body must be sent while the caller waits for the
// response head: a server may answer before the request ends.
func (c *h2cliConn) startBody(s *h2cliStream) {
	select {
	case c.bodyWork <- s:
	default:
		go c.bodyWorker(s)
	}
}

func (c *h2cliConn) bodyWorker(s *h2cliStream) {
	for {
		s.sendBody()
		c.mu.Lock()
		if c.idleWorkers >= h2cMaxIdleWorkers || c.dead {
			c.mu.Unlock()
			return
		}
		c.idleWorkers++
		c.mu.Unlock()
		select {
		case s = <-c.bodyWork:
		case <-c.done:
			s = nil
		}
		c.mu.Lock()
		c.idleWorkers--
		c.mu.Unlock()
		if s == nil {
			return
		}
	}
}

// sendBody copies the request body into DATA frames under flow control,
// then ends the stream (with the request's trailers, if it has any).
func (s *h2cliStream) sendBody() {
	body := s.req.Body
	defer body.Close()
	bp := h2BufPool.Get().(*[]byte)
	defer h2BufPool.Put(bp)
	buf := *bp
	var sent int64
	declared := s.req.ContentLength // > 0: known; the last DATA ends the stream
	for {
		n, rerr := body.Read(buf)
		sent += int64(n)
		complete := declared > 0 && sent == declared
		last := rerr == io.EOF || complete
		switch {
		case declared > 0 && sent > declared:
			s.abort(fmt.Errorf("http2: request body longer than its content-length %d", declared))
			return
		case last && declared > 0 && !complete:
			s.abort(fmt.Errorf("http2: request body of %d bytes, content-length %d", sent, declared))
			return
		case rerr != nil && rerr != io.EOF:
			s.abort(fmt.Errorf("http2: reading request body: %w", rerr))
			return
		}
		if n > 0 && !s.writeData(buf[:n], last && !hasTrailers(s.req)) {
			return
		}
		if last {
			s.endRequest() // trailers, or an empty END_STREAM; no-op if ended
			if rerr == nil {
				// Read the source to its EOF all the same: a replay
				// buffer only counts as complete (for mirrors) then.
				if n, _ := body.Read(buf[:1]); n > 0 {
					s.abort(fmt.Errorf("http2: request body longer than its content-length %d", declared))
				}
			}
			return
		}
	}
}

// writeData queues p as DATA frames as the send windows allow; false if
// the stream or connection failed.
func (s *h2cliStream) writeData(p []byte, end bool) bool {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for len(p) > 0 {
		for {
			if s.resetErr != nil || s.sentEnd || c.dead {
				return false
			}
			if s.sendWindow > 0 && c.sendWindow > 0 && len(c.out) < h2cMaxOut {
				break
			}
			s.watchLocked()
			c.cond.Wait()
		}
		n := min(int64(len(p)), s.sendWindow, c.sendWindow, int64(c.peerFrame))
		last := end && n == int64(len(p))
		_ = c.wfr.WriteData(s.id, last, p[:n])
		s.sendWindow -= n
		c.sendWindow -= n
		p = p[n:]
		c.kick()
	}
	if end {
		s.sentEndLocked()
	}
	return true
}

// endRequest sends END_STREAM after the body: on the request's trailers
// when it has them, else on an empty DATA frame.
func (s *h2cliStream) endRequest() {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.resetErr != nil || s.sentEnd || c.dead {
		return
	}
	if hasTrailers(s.req) {
		c.hbuf = c.hbuf[:0]
		for k, vs := range s.req.Trailer {
			lk := c.wireNameLocked(k)
			for _, v := range vs {
				_ = c.henc.WriteField(hpack.HeaderField{Name: lk, Value: v})
			}
		}
		c.writeBlockLocked(s.id, true)
	} else {
		_ = c.wfr.WriteData(s.id, true, nil)
		c.kick()
	}
	s.sentEndLocked()
}

func (s *h2cliStream) sentEndLocked() {
	s.sentEnd = true
	if s.recvDone {
		s.finishLocked()
	}
}

// abort resets the stream with CANCEL after a request body error.
func (s *h2cliStream) abort(err error) {
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !s.finished {
		c.resetStreamLocked(s, http2.ErrCodeCancel, err)
	}
}

// onHeaderBlock handles a response head, an informational head, or
// trailers.
func (c *h2cliConn) onHeaderBlock(b *h2cBlock) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[b.streamID]
	if s == nil {
		if b.streamID >= c.nextID {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil // reset by us; the peer had not seen it yet
	}
	protoErr := http2.StreamError{StreamID: s.id, Code: http2.ErrCodeProtocol}
	switch {
	case s.recvDone:
		c.resetStreamLocked(s, http2.ErrCodeStreamClosed, http2.StreamError{StreamID: s.id, Code: http2.ErrCodeStreamClosed})
		return nil
	case b.tooBig:
		c.resetStreamLocked(s, http2.ErrCodeProtocol, fmt.Errorf("http2: response header list larger than %d bytes", h2cMaxHeaderList))
		return nil
	case b.invalid:
		c.resetStreamLocked(s, http2.ErrCodeProtocol, protoErr)
		return nil
	}
	if s.gotHead {
		// Trailers (RFC 9113 §8.1): they end the stream.
		if !b.end || b.nstatus > 0 {
			c.resetStreamLocked(s, http2.ErrCodeProtocol, protoErr)
			return nil
		}
		tr := make(http.Header, len(b.fields))
		c.fillHeader(tr, b.fields, s.tvals[:])
		s.resp.Trailer = tr
		s.endRecvLocked()
		s.rcond.Broadcast()
		return nil
	}
	code, err := strconv.Atoi(b.status)
	if b.nstatus != 1 || len(b.status) != 3 || err != nil || code < 100 {
		c.resetStreamLocked(s, http2.ErrCodeProtocol, protoErr)
		return nil
	}
	if code < 200 {
		if b.end {
			c.resetStreamLocked(s, http2.ErrCodeProtocol, protoErr)
		}
		return nil // informational: the final head follows
	}
	hdr := make(http.Header, len(b.fields))
	c.fillHeader(hdr, b.fields, s.hvals[:])
	r := &s.resp
	r.Status = h2cStatusLine(code)
	r.StatusCode = code
	r.Proto, r.ProtoMajor = "HTTP/2.0", 2
	r.Header = hdr
	r.Request = s.req
	r.TLS = c.tls
	r.ContentLength = -1
	if cl := hdr["Content-Length"]; len(cl) == 1 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n >= 0 {
			r.ContentLength = n
		}
	}
	s.body.s = s
	r.Body = &s.body
	s.gotHead = true
	s.headDoneLocked()
	if b.end {
		if s.req.Method != http.MethodHead {
			r.ContentLength = 0
		}
		s.endRecvLocked()
	}
	s.rcond.Broadcast()
	return nil
}

// fillHeader adds fields to h with canonical keys cached per connection;
// the values share one backing array, vals when it is large enough. Read
// loop only.
func (c *h2cliConn) fillHeader(h http.Header, fields []hpack.HeaderField, vals []string) {
	if len(fields) > len(vals) {
		vals = make([]string, len(fields))
	}
	for i, hf := range fields {
		k, ok := c.keys[hf.Name]
		if !ok {
			k = textproto.CanonicalMIMEHeaderKey(hf.Name)
			if len(c.keys) < 256 {
				c.keys[hf.Name] = k
			}
		}
		if prev, ok := h[k]; ok {
			h[k] = append(prev, hf.Value)
			continue
		}
		vals[i] = hf.Value
		h[k] = vals[i : i+1 : i+1]
	}
}

// h2cliBody is a response body.
type h2cliBody struct{ s *h2cliStream }

func (b *h2cliBody) Read(p []byte) (int, error) {
	s := b.s
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.bodyClosed {
		return 0, errH2cBodyClosed
	}
	for len(s.rbuf) == s.roff {
		if s.rerr != nil {
			return 0, s.rerr
		}
		if err := s.ctx.Err(); err != nil {
			c.resetStreamLocked(s, http2.ErrCodeCancel, context.Cause(s.ctx))
			continue
		}
		s.watchLocked()
		s.rcond.Wait()
	}
	n := copy(p, s.rbuf[s.roff:])
	s.roff += n
	if s.roff == len(s.rbuf) {
		s.rbuf, s.roff = s.rbuf[:0], 0
	}
	c.returnCreditLocked(int64(n))
	if !s.recvDone && !c.dead {
		s.recvUnack += int64(n)
		if s.recvUnack >= h2cStreamWindow/4 {
			_ = c.wfr.WriteWindowUpdate(s.id, uint32(s.recvUnack))
			s.recvWindow += s.recvUnack
			s.recvUnack = 0
			c.kick()
		}
	}
	return n, nil
}

// Close ends the response: a stream still open either way is reset with
// CANCEL, and unread data gives its connection credit back.
func (b *h2cliBody) Close() error {
	s := b.s
	c := s.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if s.bodyClosed {
		return nil
	}
	s.bodyClosed = true
	c.returnCreditLocked(int64(len(s.rbuf) - s.roff))
	s.rbuf, s.roff = nil, 0
	if !s.finished {
		c.resetStreamLocked(s, http2.ErrCodeCancel, errH2cBodyClosed)
	}
	s.rcond.Broadcast()
	return nil
}
