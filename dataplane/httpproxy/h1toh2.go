package httpproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"
	"sync"
)

// forwardH2 sends an HTTP/1.1 downstream request to an HTTP/2 upstream
// through roundTripH2 and streams the response back (chunked when its
// length is unknown). This path allocates: it converts to *http.Request.
func (s *h1Session) forwardH2() bool {
	d := &s.d
	r := &s.req
	hdr := make(http.Header, len(r.hdr.h))
	for _, f := range r.hdr.h {
		k := textproto.CanonicalMIMEHeaderKey(string(f.name))
		hdr[k] = append(hdr[k], string(f.value))
	}
	u, err := url.ParseRequestURI(s.upPath)
	if err != nil {
		u = &url.URL{Path: "/"}
	}
	u.Scheme, u.Host = "http", s.upAuthority
	req := &http.Request{
		Method: string(r.method), URL: u, Host: strings.Clone(s.upAuthority),
		Proto: "HTTP/2.0", ProtoMajor: 2, Header: hdr, Body: http.NoBody,
	}
	var stream *h1BodyStream
	if !s.body.done {
		s.continue100()
		stream = &h1BodyStream{s: s}
		req.Body = stream
		req.ContentLength = -1
		if r.framing == bodyLength {
			req.ContentLength = r.contentLength
		}
		s.br.onFill = s.onBodyFill
	}
	ctx := context.Background()
	if d.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.timeout)
		defer cancel()
	}
	d.host.Acquire()
	defer d.host.Release()
	resp, err := s.p.roundTripH2(ctx, d.ep, req.WithContext(ctx))
	// The transport may still be reading the body: stop it before the
	// session's reader is used again.
	bodyDone := stream == nil || stream.detach()
	s.br.onFill = nil
	if err != nil {
		s.req.keepAlive = s.req.keepAlive && bodyDone
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			return s.failLocal(504, FlagUpstreamTimeout, BodyUpstreamTimeout)
		case isDialError(err):
			return s.failLocal(503, FlagUpstreamConnFailure, BodyConnFailure)
		}
		return s.failLocal(503, FlagUpstreamRemoteReset, BodyRemoteReset)
	}
	defer resp.Body.Close()

	h := &s.resp.hdr
	h.reset()
	for k, vs := range resp.Header {
		lk := strings.ToLower(k)
		for _, v := range vs {
			h.add(lk, v)
		}
	}
	s.resp.status = resp.StatusCode
	keep := s.keepAfter() && bodyDone
	chunked := resp.ContentLength < 0 && string(r.method) != "HEAD" &&
		resp.StatusCode != 204 && resp.StatusCode != 304
	if chunked && r.minor == 0 {
		chunked, keep = false, false
	}
	s.prepareResponseHeaders(h, true)
	s.writeResponseHead(resp.StatusCode, h, resp.ContentLength, chunked, keep)
	tmp := make([]byte, 16<<10)
	for {
		n, rerr := resp.Body.Read(tmp)
		if n > 0 {
			if chunked {
				s.bw.writeChunk(tmp[:n])
			} else {
				s.bw.write(tmp[:n])
			}
			if s.bw.flush() != nil {
				return false
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			_ = s.bw.flush()
			return false
		}
	}
	if chunked {
		s.bw.writeString("0\r\n\r\n")
	}
	if s.bw.flush() != nil {
		return false
	}
	return keep
}

// h1BodyStream lets an HTTP/2 transport read the downstream request body
// from the session's reader until detach.
type h1BodyStream struct {
	mu       sync.Mutex
	s        *h1Session
	rest     []byte
	detached bool
}

func (b *h1BodyStream) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.detached {
		return 0, errors.New("request finished")
	}
	for len(b.rest) == 0 {
		piece, err := b.s.body.next()
		b.rest = piece
		if err != nil && len(piece) == 0 {
			return 0, err
		}
	}
	n := copy(p, b.rest)
	b.rest = b.rest[n:]
	return n, nil
}

func (b *h1BodyStream) Close() error { return nil }

// detach stops further reads and reports whether the body was read whole.
func (b *h1BodyStream) detach() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.detached = true
	return b.s.body.done && len(b.rest) == 0
}
