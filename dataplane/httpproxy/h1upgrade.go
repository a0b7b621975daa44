package httpproxy

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

// upgrade forwards a websocket upgrade on a fresh upstream connection (an
// upgraded connection never returns to a pool), relays the upstream's
// answer and, on 101, splices bytes both ways until both sides are done.
// It always ends the downstream connection's HTTP life.
func (s *h1Session) upgrade() bool {
	d := &s.d
	d.host.Acquire()
	defer d.host.Release()
	conn, err := d.cluster.Dial(context.Background(), d.host)
	if err != nil {
		s.req.keepAlive = false
		return s.failLocal(503, FlagUpstreamConnFailure, BodyConnFailure)
	}
	defer conn.Close()
	uc := &h1UpConn{conn: conn}
	uc.br.reset(conn, upstreamBufSize)
	uc.bw.reset(conn, upstreamBufSize)
	s.writeUpstreamHead(&uc.bw)
	if !s.body.done {
		s.br.onFill = s.onBodyFill
		res := copyBody(&uc.bw, &s.body, s.req.framing == bodyChunked)
		s.br.onFill = nil
		if res.readErr != nil {
			s.readBodyErr(res.readErr)
			return false
		}
	}
	_ = uc.bw.flush()
	s.armUpstream(uc)
	if err := s.readResponseHead(uc); err != nil {
		s.req.keepAlive = false
		return s.upstreamError(err)
	}
	if s.resp.status != 101 {
		// Refused upgrade: relay the answer; the connection is not reusable.
		s.req.keepAlive = false
		s.relayResponse(uc, nil)
		return false
	}
	s.prepareResponseHeaders(&s.resp.hdr, true)
	s.writeResponseHead(101, &s.resp.hdr, -1, false, true)
	if s.bw.flush() != nil {
		return false
	}
	_ = s.conn.SetDeadline(time.Time{})
	_ = conn.SetDeadline(time.Time{})
	// Bytes that arrived behind either head are relayed first.
	splice(s.conn, &s.br, conn, &uc.br)
	return false
}

// splice copies a->b and b->a, half-closing each direction when its source
// ends, and returns when both directions are done. ra and rb hold bytes
// already buffered from a and b.
func splice(a net.Conn, ra *h1Reader, b net.Conn, rb *h1Reader) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pipe(b, a, ra)
	}()
	pipe(a, b, rb)
	wg.Wait()
}

// pipe copies buffered bytes then src to dst, and half-closes dst.
func pipe(dst, src net.Conn, buffered *h1Reader) {
	if p := buffered.peek(); len(p) > 0 {
		if _, err := dst.Write(p); err != nil {
			src.Close()
			return
		}
		buffered.discard(len(p))
	}
	// io.Copy between TCP connections uses splice(2).
	_, err := io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok && err == nil {
		_ = cw.CloseWrite()
	} else {
		dst.Close()
		src.Close()
	}
}
