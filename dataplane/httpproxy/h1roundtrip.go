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
	resp := h1RespPool.Get().(*h1Response)
	defer h1RespPool.Put(resp)
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
			Header:        h1ResponseHeader(&resp.hdr),
			ContentLength: -1,
			Request:       req,
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

// h1RespPool recycles parsed response heads: roundTripH1 copies what it
// keeps into the http.Response before returning one.
var h1RespPool = sync.Pool{New: func() any { return new(h1Response) }}

func statusText(code int) string {
	switch code {
	case 200:
		return "200 OK"
	case 204:
		return "204 No Content"
	case 404:
		return "404 Not Found"
	}
	return fmt.Sprintf("%d %s", code, http.StatusText(code))
}

// h1ResponseHeader converts a parsed response head's fields (names already
// lower case) to an http.Header without hop-by-hop fields, including those
// a Connection field names (RFC 9110 §7.6.1). All values share one string
// and one slice backing array, and common names map to constant canonical
// keys: a few allocations per response instead of several per field.
func h1ResponseHeader(l *hlist) http.Header {
	nominates := h1ConnNominates(l)
	drop := func(name []byte) bool {
		return h1HopByHop(name) || nominates && h1Nominated(l, name)
	}
	n, size := 0, 0
	for i := range l.h {
		if !drop(l.h[i].name) {
			n++
			size += len(l.h[i].value)
		}
	}
	hdr := make(http.Header, n)
	if n == 0 {
		return hdr
	}
	var sb strings.Builder
	sb.Grow(size)
	for i := range l.h {
		if !drop(l.h[i].name) {
			sb.Write(l.h[i].value)
		}
	}
	all := sb.String()
	vals := make([]string, n)
	j, off := 0, 0
	for i := range l.h {
		f := &l.h[i]
		if drop(f.name) {
			continue
		}
		vals[j] = all[off : off+len(f.value)]
		off += len(f.value)
		k := canonicalResponseKey(f.name)
		if prev, ok := hdr[k]; ok {
			hdr[k] = append(prev, vals[j]) // repeated field: rare, may copy
		} else {
			hdr[k] = vals[j : j+1 : j+1]
		}
		j++
	}
	return hdr
}

// h1HopByHop reports connection-specific response fields (lower case) that
// are not forwarded.
func h1HopByHop(name []byte) bool {
	switch string(name) {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade":
		return true
	}
	return false
}

// h1ConnNominates reports whether a Connection field of l names anything
// beyond the options that are hop-by-hop anyway (close, keep-alive,
// upgrade): the common heads skip the per-field search of h1Nominated.
func h1ConnNominates(l *hlist) bool {
	for i := range l.h {
		if string(l.h[i].name) != "connection" {
			continue
		}
		for tok := range h2SplitComma(string(l.h[i].value)) {
			switch {
			case tok == "", strings.EqualFold(tok, "close"), strings.EqualFold(tok, "keep-alive"), strings.EqualFold(tok, "upgrade"):
			default:
				return true
			}
		}
	}
	return false
}

// h1Nominated reports whether a Connection field of l names name.
func h1Nominated(l *hlist, name []byte) bool {
	for i := range l.h {
		if string(l.h[i].name) != "connection" {
			continue
		}
		for tok := range h2SplitComma(string(l.h[i].value)) {
			if strings.EqualFold(tok, string(name)) {
				return true
			}
		}
	}
	return false
}

// canonicalResponseKey returns the http.Header key for a lower-case field
// name; frequent names come from constants and do not allocate.
func canonicalResponseKey(name []byte) string {
	switch string(name) {
	case "content-type":
		return "Content-Type"
	case "content-length":
		return "Content-Length"
	case "date":
		return "Date"
	case "server":
		return "Server"
	case "cache-control":
		return "Cache-Control"
	case "content-encoding":
		return "Content-Encoding"
	case "etag":
		return "Etag"
	case "last-modified":
		return "Last-Modified"
	case "location":
		return "Location"
	case "set-cookie":
		return "Set-Cookie"
	case "vary":
		return "Vary"
	case "x-envoy-upstream-service-time":
		return "X-Envoy-Upstream-Service-Time"
	case "grpc-status":
		return "Grpc-Status"
	case "grpc-message":
		return "Grpc-Message"
	case "accept-ranges":
		return "Accept-Ranges"
	case "x-request-id":
		return "X-Request-Id"
	}
	return textproto.CanonicalMIMEHeaderKey(string(name))
}

// writeHTTPRequest serializes req in origin form. A body of unknown length
// goes chunked.
func writeHTTPRequest(w *h1Writer, req *http.Request, hasBody bool) error {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	w.writeString(req.Method)
	w.writeByte(' ')
	if u := req.URL; u.Opaque != "" && strings.HasPrefix(u.Opaque, "/") {
		// h2URL's form: the path goes out byte for byte.
		w.writeString(u.Opaque)
		if u.RawQuery != "" || u.ForceQuery {
			w.writeByte('?')
			w.writeString(u.RawQuery)
		}
	} else {
		w.writeString(u.RequestURI())
	}
	w.writeString(" HTTP/1.1\r\nhost: ")
	w.writeString(host)
	w.writeString("\r\n")
	for k, vs := range req.Header {
		if h1SkipRequestField(k) {
			continue
		}
		for _, v := range vs {
			w.writeLower(k)
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
		bp := h2BufPool.Get().(*[]byte)
		defer h2BufPool.Put(bp)
		buf := *bp
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

// h1SkipRequestField reports header keys (any case) that writeHTTPRequest
// does not copy: host is written from req.Host, framing from the body, and
// connection-specific fields are not forwarded.
func h1SkipRequestField(k string) bool {
	eq := strings.EqualFold
	switch len(k) {
	case 2:
		return eq(k, "te")
	case 4:
		return eq(k, "host")
	case 6:
		return eq(k, "expect")
	case 7:
		return eq(k, "upgrade")
	case 10:
		return eq(k, "connection") || eq(k, "keep-alive")
	case 14:
		return eq(k, "content-length")
	case 16:
		return eq(k, "proxy-connection")
	case 17:
		return eq(k, "transfer-encoding")
	}
	return false
}

// writeLower writes a field name in lower case (HTTP/2 and our HTTP/1.1
// output use lower-case names) without building a lowered copy.
func (w *h1Writer) writeLower(s string) {
	if w.err != nil {
		return
	}
	if len(w.buf)+len(s) > cap(w.buf) {
		if w.flush() != nil {
			return
		}
		if len(s) > cap(w.buf) {
			w.writeString(strings.ToLower(s))
			return
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		w.buf = append(w.buf, c)
	}
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
