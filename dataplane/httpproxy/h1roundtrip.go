package httpproxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/meshlet/meshlet/dataplane/upstream"
)

// roundTripH1 sends req to ep over the HTTP/1.1 pool and returns the
// response (body streaming). Used by the HTTP/2 downstream path when the
// upstream speaks HTTP/1.1. Cancelling ctx aborts the exchange, also while
// the caller reads the body. Dial failures wrap the dialer's *net.OpError.
func (p *Proxy) roundTripH1(ctx context.Context, ep *upstream.Endpoint, req *http.Request) (*http.Response, error) {
	pool := h1PoolOf(ep)
	hasBody := req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0
	resp := &h1Response{}
	for attempt := 0; ; attempt++ {
		uc, err := pool.get(ctx, attempt > 0)
		if err != nil {
			return nil, err
		}
		stop := context.AfterFunc(ctx, func() { _ = uc.conn.SetDeadline(time.Now()) })
		err = writeHTTPRequest(&uc.bw, req, hasBody)
		if err == nil {
			err = readFinalHead(uc, resp, req.Method == http.MethodHead)
		}
		if err != nil {
			stop()
			uc.conn.Close()
			if ctx.Err() != nil {
				return nil, fmt.Errorf("upstream %s: %w", ep.Host.Address, ctx.Err())
			}
			if errors.Is(err, errStaleConn) && uc.reuse && attempt == 0 && !hasBody {
				continue
			}
			return nil, fmt.Errorf("upstream %s: %w", ep.Host.Address, err)
		}
		hr := &http.Response{
			Status:        statusText(resp.status),
			StatusCode:    resp.status,
			Proto:         "HTTP/1.1",
			ProtoMajor:    1,
			ProtoMinor:    1,
			Header:        make(http.Header, len(resp.hdr.h)),
			ContentLength: -1,
			Request:       req,
		}
		for _, f := range resp.hdr.h {
			switch string(f.name) {
			case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade":
				continue
			}
			k := textproto.CanonicalMIMEHeaderKey(string(f.name))
			hr.Header[k] = append(hr.Header[k], string(f.value))
		}
		if resp.framing == bodyLength || resp.framing == bodyNone {
			hr.ContentLength = max(resp.contentLength, 0)
		}
		b := &h1RespBody{pool: pool, uc: uc, stop: stop, keep: resp.keepAlive}
		b.body.reset(&uc.br, resp.framing, resp.contentLength)
		if resp.framing == bodyChunked && ep.Cluster != nil && ep.Cluster.Spec().HTTP1Trailers {
			// enable_trailers: the chunked body's trailers become
			// hr.Trailer once the body has been read (an HTTP/2 client
			// gets them as a trailing HEADERS frame).
			hr.Trailer = make(http.Header)
			b.trailer = hr.Trailer
			b.body.trailers = &b.tl
		}
		if b.body.done {
			b.finish()
			hr.Body = http.NoBody
		} else {
			hr.Body = b
		}
		return hr, nil
	}
}

func statusText(code int) string {
	return fmt.Sprintf("%d %s", code, http.StatusText(code))
}

// writeHTTPRequest serializes req in origin form. A body of unknown length
// goes chunked.
func writeHTTPRequest(w *h1Writer, req *http.Request, hasBody bool) error {
	target := req.URL.RequestURI()
	if req.URL.Opaque != "" && strings.HasPrefix(req.URL.Opaque, "/") {
		target = req.URL.Opaque
		if req.URL.RawQuery != "" || req.URL.ForceQuery {
			target += "?" + req.URL.RawQuery
		}
	}
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	w.writeString(req.Method)
	w.writeByte(' ')
	w.writeString(target)
	w.writeString(" HTTP/1.1\r\nhost: ")
	w.writeString(host)
	w.writeString("\r\n")
	for k, vs := range req.Header {
		lk := strings.ToLower(k)
		switch lk {
		case "host", "connection", "keep-alive", "proxy-connection", "transfer-encoding",
			"te", "upgrade", "content-length", "expect":
			continue
		}
		for _, v := range vs {
			w.writeString(lk)
			w.writeString(": ")
			w.writeString(v)
			w.writeString("\r\n")
		}
	}
	chunked := false
	if hasBody {
		if req.ContentLength > 0 {
			w.writeString("content-length: ")
			w.writeInt(req.ContentLength)
			w.writeString("\r\n")
		} else {
			chunked = true
			w.writeString("transfer-encoding: chunked\r\n")
		}
	}
	w.writeString("\r\n")
	if hasBody {
		buf := make([]byte, 16<<10)
		var sent int64
		for {
			n, err := req.Body.Read(buf)
			if n > 0 {
				if !chunked && sent+int64(n) > req.ContentLength {
					return fmt.Errorf("request body longer than content-length %d", req.ContentLength)
				}
				sent += int64(n)
				if chunked {
					w.writeChunk(buf[:n])
				} else {
					w.write(buf[:n])
				}
				// Stream: what was read goes out before the next read.
				if w.flush() != nil {
					return w.err
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				return fmt.Errorf("read request body: %w", err)
			}
		}
		if !chunked && sent != req.ContentLength {
			return fmt.Errorf("request body %d bytes, content-length %d", sent, req.ContentLength)
		}
		if chunked {
			w.writeString("0\r\n\r\n")
		}
	}
	return w.flush()
}

// readFinalHead reads response heads on uc until a final (non-1xx) one.
func readFinalHead(uc *h1UpConn, resp *h1Response, head bool) error {
	for {
		n, started, err := uc.br.readHead(maxResponseHead, errBadStatusLine)
		if err != nil {
			if !started && !isTimeout(err) && isStale(err) {
				return errors.Join(errStaleConn, err)
			}
			return err
		}
		err = resp.parse(uc.br.buf[uc.br.r:uc.br.r+n], head)
		uc.br.discard(n)
		if err != nil {
			return err
		}
		if resp.status >= 200 {
			return nil
		}
		if resp.status == 101 {
			return errBadStatusLine
		}
	}
}

// h1RespBody streams an upstream response body and returns the connection
// to the pool once the body has been read to its end.
type h1RespBody struct {
	mu   sync.Mutex
	pool *h1Pool
	uc   *h1UpConn
	stop func() bool
	body bodyReader
	keep bool
	rest []byte
	err  error
	// trailer is the response's Trailer map, filled from tl at the end.
	trailer http.Header
	tl      hlist
}

func (b *h1RespBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for len(b.rest) == 0 {
		if b.err != nil {
			return 0, b.err
		}
		piece, err := b.body.next()
		b.rest = piece
		if err == io.EOF {
			b.finish()
			b.err = io.EOF
			for _, f := range b.tl.h {
				k := textproto.CanonicalMIMEHeaderKey(string(f.name))
				b.trailer[k] = append(b.trailer[k], string(f.value))
			}
		} else if err != nil {
			b.abort()
			b.err = err
		}
	}
	n := copy(p, b.rest)
	b.rest = b.rest[n:]
	return n, nil
}

// finish returns the connection to the pool (or closes it).
func (b *h1RespBody) finish() {
	if b.uc == nil {
		return
	}
	if !b.stop() {
		// ctx was cancelled: the deadline may already be poisoned.
		b.uc.conn.Close()
	} else if b.keep {
		_ = b.uc.conn.SetDeadline(time.Time{})
		b.pool.put(b.uc)
	} else {
		b.uc.conn.Close()
	}
	b.uc = nil
}

func (b *h1RespBody) abort() {
	if b.uc != nil {
		b.stop()
		b.uc.conn.Close()
		b.uc = nil
	}
}

func (b *h1RespBody) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		b.err = errors.New("body closed")
	}
	b.abort()
	return nil
}
