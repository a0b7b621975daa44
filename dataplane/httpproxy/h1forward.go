package httpproxy

import (
	"context"
	"errors"
	"io"
	"syscall"
	"time"

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
	for i := range h.h {
		switch string(h.h[i].name) {
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding",
			"te", "expect", "content-length", "host":
			continue
		case "upgrade":
			if !r.upgrade {
				continue
			}
		}
		h.h[j] = h.h[i]
		j++
	}
	h.h = h.h[:j]

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

	s.upPath = bstr(r.path)
	s.upAuthority = bstr(r.authority)
	if a := d.action; a != nil {
		if a.PrefixRewrite != "" || a.RegexRewrite != nil {
			s.upPath = policy.RewritePath(d.route, a, s.upPath)
		}
		if a.HostRewriteLiteral != "" || a.AutoHostRewrite || a.HostRewriteHeader != "" {
			if host, ok := policy.RewriteHost(a, r, ""); ok {
				s.upAuthority = host
			}
		}
	}
}

func isInternal(s *h1Session) bool {
	a := s.info.Remote.Addr().Unmap()
	return a.IsLoopback() || a.IsPrivate()
}

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

// writeUpstreamHead serializes the prepared request head.
func (s *h1Session) writeUpstreamHead(w *h1Writer) {
	r := &s.req
	w.write(r.method)
	w.writeByte(' ')
	w.writeString(s.upPath)
	w.writeString(" HTTP/1.1\r\nhost: ")
	w.writeString(s.upAuthority)
	w.writeString("\r\n")
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
// pool and streams the response back. false means close downstream.
func (s *h1Session) forwardH1() bool {
	d := &s.d
	r := &s.req
	pool := h1PoolOf(d.ep)
	d.host.Acquire()
	defer d.host.Release()
	s.continue100()

	var uc *h1UpConn
	for attempt := 0; ; attempt++ {
		var err error
		uc, err = pool.get(context.Background(), attempt > 0)
		if err != nil {
			return s.failLocal(503, FlagUpstreamConnFailure, BodyConnFailure)
		}
		s.writeUpstreamHead(&uc.bw)
		if !s.body.done {
			s.br.onFill = s.onBodyFill
			res := copyBody(&uc.bw, &s.body, r.framing == bodyChunked)
			s.br.onFill = nil
			if res.readErr != nil {
				uc.conn.Close()
				s.readBodyErr(res.readErr)
				return false
			}
		}
		// A failed write still gets a read: the upstream may have answered
		// early (413, 401) and closed.
		_ = uc.bw.flush()
		s.armUpstream(uc)
		err = s.readResponseHead(uc)
		if err == nil {
			break
		}
		uc.conn.Close()
		if errRetryable(err) && uc.reuse && attempt == 0 && r.framing == bodyNone {
			// The pooled connection had been closed by the upstream while
			// idle; nothing was consumed, so a fresh connection may retry.
			continue
		}
		return s.upstreamError(err)
	}
	return s.relayResponse(uc, pool)
}

// errStaleConn marks a response that failed before its first byte.
var errStaleConn = errors.New("upstream closed before responding")

func errRetryable(err error) bool { return errors.Is(err, errStaleConn) }

// armUpstream sets the deadline for the upstream response: the route
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

// upstreamError answers a request whose upstream failed before the
// response head arrived, with Envoy's flag and text.
func (s *h1Session) upstreamError(err error) bool {
	var he *h1Error
	switch {
	case isTimeout(err):
		return s.failLocal(504, FlagUpstreamTimeout, BodyUpstreamTimeout)
	case errors.As(err, &he):
		return s.failLocal(502, FlagUpstreamProtocolErr, BodyProtocolError)
	case errors.Is(err, syscall.ECONNRESET):
		return s.failLocal(503, FlagUpstreamRemoteReset, BodyRemoteReset)
	}
	return s.failLocal(503, FlagUpstreamConnTerminate, BodyConnTermination)
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
	res := copyBody(&s.bw, &s.rb, chunkedOut)
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
