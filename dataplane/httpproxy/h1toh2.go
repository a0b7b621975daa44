package httpproxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/meshlet/meshlet/policy"
)

// forwardH2 sends an HTTP/1.1 downstream request to an HTTP/2 upstream
// and streams the response back (chunked when its length is unknown),
// with the same retries, timeouts, mirrors, circuit breaking and outlier
// reporting as the other paths (rtexchange.go). This path allocates: it
// converts to *http.Request.
func (s *h1Session) forwardH2() bool {
	d := &s.d
	r := &s.req
	hdr := make(http.Header, len(r.hdr.h))
	for _, f := range r.hdr.h {
		k := textproto.CanonicalMIMEHeaderKey(string(f.name))
		hdr[k] = append(hdr[k], string(f.value))
	}
	// Clones: upPath and upAuthority may alias the session's buffers, and
	// a mirror outlives the request.
	authority := strings.Clone(s.upAuthority)
	out := &http.Request{
		Method: string(r.method), URL: h2URL(strings.Clone(s.upPath), authority), Host: authority,
		Proto: "HTTP/2.0", ProtoMajor: 2, Header: hdr, Body: http.NoBody,
	}
	rp := policy.EffectiveRetryPolicy(d.vh, d.action)
	mirrors := d.action != nil && len(d.action.MirrorPolicies) > 0
	computeTimeouts(&s.to, d, r, false, s.hcm.StreamIdleTimeout)

	// down ends when the client leaves; ctx also carries the timers.
	down, leave := context.WithCancel(context.Background())
	defer leave()
	ctx, cancel := context.WithCancelCause(down)
	defer cancel(nil)
	overall, stopOverall := armOverall(&s.to, time.Now(), cancel)
	defer stopOverall()
	var idle *h2IdleTimer
	if t := s.to.idle; t > 0 {
		idle = &h2IdleTimer{d: t}
		idle.t = time.AfterFunc(t, func() { cancel(errH2StreamIdle) })
		defer idle.t.Stop()
	}

	var stream *h1BodyStream
	var rb *replayBody
	hasBody := !s.body.done
	if hasBody {
		s.continue100()
		stream = &h1BodyStream{s: s}
		var body io.ReadCloser = stream
		if idle != nil {
			body = &h2IdleBody{ReadCloser: body, idle: idle}
		}
		out.Body = body
		out.ContentLength = -1
		if r.framing == bodyLength {
			out.ContentLength = r.contentLength
		}
		if rp != nil || mirrors {
			rb = newReplayBody(body, maxReplayBody)
		}
		s.br.onFill = s.onBodyFill
	}
	// With the body read (or none), nothing reads the connection while we
	// wait: watch it for the client leaving (DC). A streaming body is
	// watched by its own reads.
	var w *dcWatch
	if !hasBody {
		w = startDCWatch(s.conn, func(gone bool) {
			if gone {
				leave()
			}
		})
	}

	rs := &s.rs
	rs.init(rp, d.cluster)
	defer rs.done()
	x := rtExchange{d: d, rs: rs, rp: rp, to: &s.to, out: out, rb: rb, hasBody: hasBody,
		overall: overall, down: down}
	resp, res, outcome := s.p.exchangeRT(ctx, &x)
	// The transport may still be reading the body: stop it before the
	// session's reader is used again.
	bodyDone := stream == nil || stream.detach()
	s.br.onFill = nil
	if w != nil && w.stop(s.conn) {
		leave()
	}
	if outcome != rtResponse {
		s.req.keepAlive = s.req.keepAlive && bodyDone
	}
	switch outcome {
	case rtOverflow:
		s.overloaded = true
		return s.failLocal(503, rs.finalFlags(FlagUpstreamOverflow), BodyOverflow)
	case rtNoHealthy:
		return s.failLocal(503, rs.finalFlags(FlagNoHealthyUpstream), BodyNoHealthyUpstream)
	case rtDownstreamGone:
		d.flags = FlagDownstreamTerminate
		return false
	case rtFailed:
		if context.Cause(ctx) == errStreamDuration {
			return s.failLocal(408, FlagNone, BodyDurationTimeout)
		}
		return s.failLocal(rtFailure(ctx, &res, rs))
	}
	defer res.done()
	defer resp.Body.Close()
	if idle != nil {
		resp.Body = &h2IdleBody{ReadCloser: resp.Body, idle: idle}
	}
	return s.relayRT(resp, bodyDone)
}

// relayRT writes an *http.Response back to the HTTP/1.1 client.
func (s *h1Session) relayRT(resp *http.Response, bodyDone bool) bool {
	r := &s.req
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
			s.sent += int64(n)
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
		// HTTP/2 upstreams always deliver trailers; the HTTP/1.1 codec
		// sends them only with the connection manager's enable_trailers.
		var tl *hlist
		if s.hcm.HTTP1Trailers && len(resp.Trailer) > 0 {
			tl = &s.trl
			tl.reset()
			for k, vs := range resp.Trailer {
				lk := []byte(strings.ToLower(k))
				if forbiddenTrailer(lk) {
					continue
				}
				for _, v := range vs {
					tl.add(string(lk), v)
				}
			}
		}
		writeLastChunk(&s.bw, tl)
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
