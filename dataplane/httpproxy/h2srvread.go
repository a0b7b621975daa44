package httpproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http2"
)

// readLoop reads the client preface and then frames until the connection
// fails or closes. It reports whether the end was orderly (the writer
// should still flush).
func (c *h2sConn) readLoop() (graceful bool) {
	_ = c.conn.SetReadDeadline(time.Now().Add(h2sPrefaceTimeout))
	var preface [len(h2Preface)]byte
	if _, err := io.ReadFull(c.br, preface[:]); err != nil || string(preface[:]) != h2Preface {
		return false
	}
	_ = c.conn.SetReadDeadline(time.Time{})

	c.mu.Lock()
	_ = c.wfr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: c.cfg.maxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2sWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.cfg.maxHeaderList},
	)
	_ = c.wfr.WriteWindowUpdate(0, h2sWindow-65535)
	c.recvWindow = h2sWindow
	c.setIdleLocked()
	c.armLifetimeLocked() // after SETTINGS: a GOAWAY must not precede them
	c.mu.Unlock()
	c.kick()

	for {
		if !c.blk.open {
			// Inside a header block the budget and the headers deadline
			// span all of its frames.
			c.fb.reset()
		}
		f, err := c.fr.ReadFrame()
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				// A frame the Framer rejects for its stream only.
				c.mu.Lock()
				if se.StreamID > c.maxClientID {
					c.maxClientID = se.StreamID
				}
				c.resetStreamLocked(se.StreamID, se.Code)
				c.mu.Unlock()
				continue
			}
			return c.connError(err)
		}
		if err := c.processFrame(f); err != nil {
			return c.connError(err)
		}
		if c.flooded.Load() {
			return c.connError(errH2sFlood)
		}
	}
}

// connError ends the connection after a read error or a protocol
// violation: GOAWAY with the error code when it is one.
func (c *h2sConn) connError(err error) bool {
	var ce http2.ConnectionError
	code := http2.ErrCode(0)
	graceful := true
	switch {
	case errors.Is(err, errH2sFlood), errors.Is(err, errH2sHeaderFlood):
		// The client does not read, or is mid-block: GOAWAY goes out
		// only if the socket takes it now.
		code, graceful = http2.ErrCodeEnhanceYourCalm, false
	case errors.Is(err, errH2sRapidReset):
		code = http2.ErrCodeEnhanceYourCalm
	case errors.As(err, &ce):
		code = http2.ErrCode(ce)
	case errors.Is(err, http2.ErrFrameTooLarge):
		code = http2.ErrCodeFrameSize
	default:
		return false // I/O error or EOF: nobody to tell
	}
	c.mu.Lock()
	c.goAway = false // a protocol error GOAWAY supersedes a drain's
	c.goAwayLocked(code)
	c.mu.Unlock()
	return graceful
}

func (c *h2sConn) processFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.HeadersFrame:
		return c.onHeadersFrame(f) // h2srvhdr.go
	case *http2.ContinuationFrame:
		return c.onContinuation(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.PingFrame:
		if !f.IsAck() {
			c.mu.Lock()
			_ = c.wfr.WritePing(true, f.Data)
			c.controlQueuedLocked()
			c.mu.Unlock()
			c.kick()
		}
	case *http2.RSTStreamFrame:
		c.mu.Lock()
		if s := c.streams[f.StreamID]; s != nil {
			spent := s.resetErr == nil && c.clientResetLocked(s)
			s.resetLocked(errH2sStreamReset)
			s.recvDone = true
			c.mu.Unlock()
			s.cancelContexts()
			if spent {
				return errH2sRapidReset
			}
			return nil
		}
		if f.StreamID > c.maxClientID {
			c.mu.Unlock()
			return http2.ConnectionError(http2.ErrCodeProtocol) // idle stream
		}
		spent := f.StreamID == c.lastRefused && c.refusedResetLocked()
		c.mu.Unlock()
		if spent {
			return errH2sRapidReset
		}
	case *http2.GoAwayFrame:
		if f.ErrCode != http2.ErrCodeNo {
			return io.EOF // the client gives up on the connection
		}
	case *http2.PushPromiseFrame:
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	// PRIORITY and unknown frames are ignored (RFC 9113 §5.3.2, §4.1).
	return nil
}

func (c *h2sConn) onSettings(f *http2.SettingsFrame) error {
	if f.IsAck() {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	err := f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingInitialWindowSize:
			delta := int64(s.Val) - c.peerWindow
			c.peerWindow = int64(s.Val)
			for _, st := range c.streams {
				st.sendWindow += delta
				if st.sendWindow > h2sMaxWindow {
					return http2.ConnectionError(http2.ErrCodeFlowControl)
				}
			}
		case http2.SettingMaxFrameSize:
			c.peerFrame = int(s.Val)
		case http2.SettingHeaderTableSize:
			c.henc.SetMaxDynamicTableSize(s.Val)
		}
		return nil
	})
	if err != nil {
		return err
	}
	_ = c.wfr.WriteSettingsAck()
	c.controlQueuedLocked()
	c.cond.Broadcast()
	c.kick()
	return nil
}

func (c *h2sConn) onWindowUpdate(f *http2.WindowUpdateFrame) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.StreamID == 0 {
		c.sendWindow += int64(f.Increment)
		if c.sendWindow > h2sMaxWindow {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
		c.cond.Broadcast()
		return nil
	}
	s := c.streams[f.StreamID]
	if s == nil {
		if f.StreamID > c.maxClientID {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		return nil // closed stream: a late update is fine
	}
	s.sendWindow += int64(f.Increment)
	if s.sendWindow > h2sMaxWindow {
		c.resetStreamLocked(f.StreamID, http2.ErrCodeFlowControl)
		return nil
	}
	c.cond.Broadcast()
	return nil
}

func (c *h2sConn) onData(f *http2.DataFrame) error {
	id := f.StreamID
	n := int64(f.Length) // padding counts against flow control too
	data := f.Data()
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.recvWindow {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	c.recvWindow -= n
	s := c.streams[id]
	if s == nil || s.recvDone {
		c.returnCreditLocked(n)
		if id > c.maxClientID {
			return http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if s == nil {
			c.resetStreamLocked(id, http2.ErrCodeStreamClosed)
		} else {
			// DATA after END_STREAM (RFC 9113 §5.1 half-closed remote).
			c.abortStreamLocked(s, http2.ErrCodeStreamClosed)
		}
		return nil
	}
	if n > s.recvWindow {
		c.returnCreditLocked(n)
		c.abortStreamLocked(s, http2.ErrCodeFlowControl)
		return nil
	}
	s.recvWindow -= n
	// Padding is consumed at once.
	if pad := n - int64(len(data)); pad > 0 {
		c.returnCreditLocked(pad)
	}
	s.received += int64(len(data))
	s.reqMsgs.feed(data)
	if s.declared >= 0 && (s.received > s.declared || (f.StreamEnded() && s.received != s.declared)) {
		c.returnCreditLocked(int64(len(data)))
		c.abortStreamLocked(s, http2.ErrCodeProtocol)
		return nil
	}
	if s.bodyClosed {
		c.returnCreditLocked(int64(len(data)))
	} else if len(data) > 0 {
		s.rbuf = append(s.rbuf, data...)
	}
	if f.StreamEnded() {
		s.recvDone = true
		if s.rerr == nil {
			s.rerr = io.EOF
		}
	}
	s.rcond.Broadcast()
	return nil
}

// resetStreamLocked sends RST_STREAM for id.
func (c *h2sConn) resetStreamLocked(id uint32, code http2.ErrCode) {
	if c.dead {
		return
	}
	_ = c.wfr.WriteRSTStream(id, code)
	c.controlQueuedLocked()
	c.kick()
}

// abortStreamLocked resets a stream we still track: RST_STREAM to the
// client, errors for its handler. Its context is cancelled too.
func (c *h2sConn) abortStreamLocked(s *h2sStream, code http2.ErrCode) {
	if s.resetErr == nil {
		c.resetStreamLocked(s.id, code)
	}
	s.resetLocked(errH2sStreamClosed)
	s.recvDone = true
	go s.cancelContexts() // not under mu: context callbacks may take it
}

// onHeaders handles a decoded header block: a request opens a stream,
// trailers end one.
func (c *h2sConn) onHeaders(f *h2sBlock) error {
	id := f.streamID
	c.mu.Lock()
	if s := c.streams[id]; s != nil {
		// Trailers end the request (RFC 9113 §8.1).
		defer c.mu.Unlock()
		if s.recvDone {
			if s.resetErr != nil {
				return nil
			}
			return http2.ConnectionError(http2.ErrCodeStreamClosed)
		}
		if !f.end || f.npseudo > 0 {
			c.abortStreamLocked(s, http2.ErrCodeProtocol)
			return nil
		}
		if s.declared >= 0 && s.received != s.declared {
			c.abortStreamLocked(s, http2.ErrCodeProtocol)
			return nil
		}
		tr := make(http.Header, len(f.fields))
		for _, hf := range f.fields {
			k := c.canonicalKey(hf.Name)
			tr[k] = append(tr[k], hf.Value)
		}
		s.req.Trailer = tr
		s.recvDone = true
		if s.rerr == nil {
			s.rerr = io.EOF
		}
		s.rcond.Broadcast()
		return nil
	}
	if id%2 == 0 {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if id <= c.maxClientID {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeStreamClosed)
	}
	c.maxClientID = id
	if c.goAway || c.closing {
		c.mu.Unlock()
		return nil // after GOAWAY new streams are ignored; the client retries
	}
	if uint32(c.active) >= c.cfg.maxStreams {
		c.lastRefused = id
		c.resetStreamLocked(id, http2.ErrCodeRefusedStream)
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()

	s := &h2sStream{c: c, id: id, declared: -1, opened: time.Now()}
	s.rcond.L = &c.mu
	var req http.Request // stays on the stack: WithContext copies it
	handler, code := c.newRequest(f, s, &req)
	if code != http2.ErrCodeNo {
		c.mu.Lock()
		c.resetStreamLocked(id, code)
		c.mu.Unlock()
		return nil
	}
	s.ctx, s.cancel = context.WithCancel(c.base)
	// The handler's upstream context is a sibling under c.base, not a
	// child of s.ctx: a child of a cancelCtx costs its parent a done
	// channel and a children map, three more allocations per stream.
	// cancelContexts ends both, s.ctx first, as the parent would.
	s.upCtx, s.upCancel = context.WithCancelCause(c.base)
	s.req = req.WithContext(s.ctx) // the one Request allocated
	s.w.s = s
	s.w.head = req.Method == http.MethodHead
	s.w.hdr = make(http.Header, 4)

	c.mu.Lock()
	s.sendWindow = c.peerWindow
	s.recvWindow = h2sWindow
	s.recvDone = f.end
	if s.recvDone {
		s.rerr = io.EOF
	}
	c.streams[id] = s
	c.opened++
	c.active++
	if m := c.cfg.maxRequests; m > 0 && uint32(c.opened) >= m {
		// max_requests_per_connection: this stream is the last; GOAWAY
		// names it, and the connection closes once it is done.
		c.goAwayLocked(http2.ErrCodeNo)
	}
	c.setIdleLocked()
	c.mu.Unlock()
	c.dispatch(h2sWork{s: s, h: handler})
	return nil
}

// newRequest validates a request header block (RFC 9113 §8.3) and fills r,
// the http.Request the handler sees (before its context is bound). A
// non-zero code resets the stream.
func (c *h2sConn) newRequest(f *h2sBlock, s *h2sStream, r *http.Request) (http.Handler, http2.ErrCode) {
	method, path, scheme, authority := f.method, f.path, f.scheme, f.authority
	if f.status != "" || f.protocol != "" {
		return nil, http2.ErrCodeProtocol
	}
	isConnect := method == http.MethodConnect
	if isConnect {
		if path != "" || scheme != "" || authority == "" {
			return nil, http2.ErrCodeProtocol
		}
	} else if method == "" || path == "" || scheme == "" {
		return nil, http2.ErrCodeProtocol
	}
	// These go into an HTTP/1.1 request line and Host upstream as they
	// are: nothing that could split or end a line there.
	if !validMethod(method) || !validH2Path(path) || !validAuthority(authority) {
		return nil, http2.ErrCodeProtocol
	}
	fields := f.fields
	hdr := make(http.Header, len(fields))
	// One backing array for the values: each key's slice is a capped
	// window of it (a second value or an append copies out).
	var vals []string
	if len(fields) <= len(s.vals) {
		vals = s.vals[:len(fields)]
	} else {
		vals = make([]string, len(fields))
	}
	nv := 0
	var cookies []string
	for _, hf := range fields {
		switch hf.Name {
		case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
			return nil, http2.ErrCodeProtocol
		case "te":
			if hf.Value != "trailers" {
				return nil, http2.ErrCodeProtocol
			}
		case "cookie":
			// Crumbs are joined back into one field (RFC 9113 §8.2.3).
			cookies = append(cookies, hf.Value)
			continue
		}
		k := c.canonicalKey(hf.Name)
		if vs, ok := hdr[k]; ok {
			hdr[k] = append(vs, hf.Value)
			continue
		}
		vals[nv] = hf.Value
		hdr[k] = vals[nv : nv+1 : nv+1]
		nv++
	}
	if len(cookies) > 0 {
		hdr["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if hosts := hdr["Host"]; len(hosts) > 0 {
		// One host, naming what :authority names if both are present
		// (RFC 9113 §8.3.1): routing and the upstream Host must agree.
		if len(hosts) > 1 || !validAuthority(hosts[0]) || (authority != "" && !strings.EqualFold(hosts[0], authority)) {
			return nil, http2.ErrCodeProtocol
		}
		if authority == "" {
			authority = hosts[0]
		}
		delete(hdr, "Host")
	}

	r.Proto, r.ProtoMajor = "HTTP/2.0", 2
	r.RemoteAddr, r.TLS = c.remoteAddr, c.tls
	r.Method = method
	r.Header = hdr
	r.Host = authority
	if isConnect {
		r.URL = &url.URL{Host: authority}
		r.RequestURI = authority
	} else {
		u, err := parseH2Path(path, &s.url)
		if err != nil {
			return nil, http2.ErrCodeProtocol
		}
		r.URL = u
		r.RequestURI = path
	}
	if f.truncated || (c.cfg.maxHeaders > 0 && len(fields) > c.cfg.maxHeaders) {
		r.Body = http.NoBody
		return http.HandlerFunc(h2sHeadersTooLarge), http2.ErrCodeNo
	}
	cl := hdr["Content-Length"]
	if len(cl) > 1 || (len(cl) == 1 && !validContentLength(cl[0])) {
		return nil, http2.ErrCodeProtocol
	}
	if f.end {
		// No DATA follows: a declared length must be zero (RFC 9113
		// §8.1.1), or an HTTP/1.1 upstream would wait for the body.
		if len(cl) == 1 && strings.TrimLeft(cl[0], "0") != "" {
			return nil, http2.ErrCodeProtocol
		}
		r.Body = http.NoBody
	} else {
		r.ContentLength = -1
		if len(cl) == 1 {
			n, err := strconv.ParseInt(cl[0], 10, 64)
			if err != nil {
				return nil, http2.ErrCodeProtocol
			}
			r.ContentLength = n
			s.declared = n
		}
		s.body.s = s
		r.Body = &s.body
		if v := hdr["Expect"]; len(v) == 1 && strings.EqualFold(v[0], "100-continue") {
			s.needContinue = true
		}
	}
	return c.h, http2.ErrCodeNo
}

// h2sHeadersTooLarge answers a request whose header list went over
// SETTINGS_MAX_HEADER_LIST_SIZE, like x/net's server.
func h2sHeadersTooLarge(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
	_, _ = io.WriteString(w, "<h1>HTTP Error 431</h1><p>Request Header Field(s) Too Large</p>")
}
