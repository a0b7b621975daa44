package httpproxy

import (
	"io"
	"strconv"
)

// maxChunkLine bounds a chunk-size line with its extensions.
const maxChunkLine = 4096

// bodyReader yields a message body from an h1Reader in place: pieces are
// slices of the reader's buffer, valid until the next call.
type bodyReader struct {
	src    *h1Reader
	mode   framing
	remain int64 // bytes left in a length body or the current chunk
	state  uint8
	// trailerLimit bounds the trailer section of a chunked body.
	trailerLimit int
	// trailers, when set, receives the trailer fields of a chunked body;
	// when nil they are checked and dropped.
	trailers *hlist
	done     bool
	// n counts the body bytes returned so far (telemetry; see
	// h1telemetry.go, which wraps nextPiece as next).
	n int64
}

const (
	chunkSize uint8 = iota
	chunkData
	chunkCRLF
	chunkTrailer
)

func (b *bodyReader) reset(src *h1Reader, mode framing, length int64) {
	*b = bodyReader{src: src, mode: mode, remain: length, trailerLimit: 64 << 10}
	if mode == bodyNone || (mode == bodyLength && length == 0) {
		b.done = true
	}
}

// needsRead reports whether next would block on the connection.
func (b *bodyReader) needsRead() bool { return !b.done && b.src.buffered() == 0 }

// nextPiece returns the next piece of the body, or io.EOF after the last
// one. A connection that ends early yields io.ErrUnexpectedEOF (except for
// close-delimited bodies, where EOF is the end).
func (b *bodyReader) nextPiece() ([]byte, error) {
	for {
		if b.done {
			return nil, io.EOF
		}
		switch b.mode {
		case bodyLength:
			p, err := b.take(b.remain)
			if err != nil {
				return nil, err
			}
			b.remain -= int64(len(p))
			if b.remain == 0 {
				b.done = true
			}
			return p, nil
		case bodyClose:
			if b.src.buffered() == 0 {
				if err := b.src.fill(); err != nil {
					if err == io.EOF {
						b.done = true
					}
					return nil, err
				}
			}
			p := b.src.peek()
			b.src.discard(len(p))
			return p, nil
		case bodyChunked:
			switch b.state {
			case chunkSize:
				line, err := b.line()
				if err != nil {
					return nil, err
				}
				n, err := parseChunkSize(line)
				if err != nil {
					return nil, err
				}
				if n == 0 {
					b.state = chunkTrailer
				} else {
					b.remain, b.state = n, chunkData
				}
			case chunkData:
				p, err := b.take(b.remain)
				if err != nil {
					return nil, err
				}
				b.remain -= int64(len(p))
				if b.remain == 0 {
					b.state = chunkCRLF
				}
				return p, nil
			case chunkCRLF:
				for b.src.buffered() < 2 {
					if err := b.src.fill(); err != nil {
						return nil, unexpected(err)
					}
				}
				if p := b.src.peek(); p[0] != '\r' || p[1] != '\n' {
					return nil, errBadChunk
				}
				b.src.discard(2)
				b.state = chunkSize
			case chunkTrailer:
				// Trailer fields are checked, and dropped unless the caller
				// collects them: Envoy forwards HTTP/1.1 trailers only with
				// http_protocol_options.enable_trailers.
				line, err := b.line()
				if err != nil {
					return nil, err
				}
				if len(line) == 0 {
					b.done = true
					return nil, io.EOF
				}
				b.trailerLimit -= len(line) + 2
				if b.trailerLimit < 0 || line[0] == ' ' || line[0] == '\t' {
					return nil, errBadChunk
				}
				var l hlist
				tmp := append(line[:len(line):len(line)], "\r\n\r\n"...)
				if parseHeaders(tmp, &l, 0) != nil {
					return nil, errBadChunk
				}
				if b.trailers != nil {
					for _, f := range l.h {
						if !forbiddenTrailer(f.name) {
							b.trailers.addBytes(string(f.name), f.value)
						}
					}
				}
			}
		default:
			b.done = true
		}
	}
}

// take returns up to max buffered bytes, filling when none are buffered.
func (b *bodyReader) take(max int64) ([]byte, error) {
	if b.src.buffered() == 0 {
		if err := b.src.fill(); err != nil {
			return nil, unexpected(err)
		}
	}
	p := b.src.peek()
	if int64(len(p)) > max {
		p = p[:max]
	}
	b.src.discard(len(p))
	return p, nil
}

// line returns the next CRLF-terminated line without its CRLF.
func (b *bodyReader) line() ([]byte, error) {
	for {
		p := b.src.peek()
		if i := indexByte(p, '\n'); i >= 0 {
			if i == 0 || p[i-1] != '\r' {
				return nil, errBadChunk
			}
			b.src.discard(i + 1)
			return p[:i-1], nil
		}
		if len(p) > maxChunkLine {
			return nil, errBadChunk
		}
		if err := b.src.fill(); err != nil {
			if err == errBufferFull {
				return nil, errBadChunk
			}
			return nil, unexpected(err)
		}
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// parseChunkSize parses "1*HEXDIG [ chunk-ext ]".
func parseChunkSize(line []byte) (int64, error) {
	var n int64
	i := 0
	for ; i < len(line); i++ {
		c := line[i]
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			d = c - 'A' + 10
		default:
			goto ext
		}
		if i >= 15 {
			return 0, errBadChunk // would overflow int64 soon; no sane chunk is this big
		}
		n = n<<4 | int64(d)
	}
ext:
	if i == 0 {
		return 0, errBadChunk
	}
	rest := line[i:]
	// chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	if len(rest) > 0 && rest[0] != ';' {
		return 0, errBadChunk
	}
	for _, c := range rest {
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return 0, errBadChunk
		}
	}
	return n, nil
}

// h1Writer buffers writes to a connection. Errors are sticky.
type h1Writer struct {
	w   io.Writer
	buf []byte
	err error
}

func (w *h1Writer) reset(dst io.Writer, size int) {
	w.w = dst
	if cap(w.buf) < size {
		w.buf = make([]byte, 0, size)
	}
	w.buf = w.buf[:0]
	w.err = nil
}

func (w *h1Writer) flush() error {
	if w.err != nil {
		return w.err
	}
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.w.Write(w.buf)
	w.buf = w.buf[:0]
	if err != nil {
		w.err = err
	}
	return err
}

func (w *h1Writer) write(p []byte) {
	if w.err != nil {
		return
	}
	if len(w.buf)+len(p) > cap(w.buf) {
		if w.flush() != nil {
			return
		}
		if len(p) >= cap(w.buf)/2 {
			if _, err := w.w.Write(p); err != nil {
				w.err = err
			}
			return
		}
	}
	w.buf = append(w.buf, p...)
}

func (w *h1Writer) writeString(s string) {
	if w.err != nil {
		return
	}
	if len(w.buf)+len(s) > cap(w.buf) {
		if w.flush() != nil {
			return
		}
		for len(s) > cap(w.buf) {
			w.buf = append(w.buf, s[:cap(w.buf)]...)
			if w.flush() != nil {
				return
			}
			s = s[cap(w.buf):]
		}
	}
	w.buf = append(w.buf, s...)
}

func (w *h1Writer) writeByte(c byte) {
	if len(w.buf) == cap(w.buf) && w.flush() != nil {
		return
	}
	w.buf = append(w.buf, c)
}

func (w *h1Writer) writeInt(n int64) {
	// Format into the buffer itself: a stack array passed to write would
	// escape through the io.Writer and allocate.
	if cap(w.buf)-len(w.buf) < 20 && w.flush() != nil {
		return
	}
	w.buf = strconv.AppendInt(w.buf, n, 10)
}

// writeChunk writes p as one chunk of a chunked body.
func (w *h1Writer) writeChunk(p []byte) {
	if len(p) == 0 {
		return
	}
	if cap(w.buf)-len(w.buf) < 18 && w.flush() != nil {
		return
	}
	w.buf = strconv.AppendInt(w.buf, int64(len(p)), 16)
	w.buf = append(w.buf, '\r', '\n')
	w.write(p)
	w.writeString("\r\n")
}

// copyResult tells which side of a body copy failed.
type copyResult struct {
	n        int64
	readErr  error
	writeErr error
}

// copyBody streams src to dst, re-encoding as chunked when chunked is set
// (then ending with the last-chunk). dst is flushed whenever src is about
// to block, so a slow body streams instead of sitting in the buffer.
func copyBody(dst *h1Writer, src *bodyReader, chunked bool) copyResult {
	var res copyResult
	for {
		if src.needsRead() {
			if err := dst.flush(); err != nil {
				res.writeErr = err
				return res
			}
		}
		p, err := src.next()
		if len(p) > 0 {
			res.n += int64(len(p))
			if chunked {
				dst.writeChunk(p)
			} else {
				dst.write(p)
			}
			if dst.err != nil {
				res.writeErr = dst.err
				return res
			}
		}
		if err == io.EOF {
			if chunked {
				writeLastChunk(dst, src.trailers)
			}
			res.writeErr = dst.err
			return res
		}
		if err != nil {
			res.readErr = err
			return res
		}
	}
}

// writeLastChunk ends a chunked body, with trailer fields when t holds
// any.
func writeLastChunk(w *h1Writer, t *hlist) {
	if t == nil || len(t.h) == 0 {
		w.writeString("0\r\n\r\n")
		return
	}
	w.writeString("0\r\n")
	for i := range t.h {
		w.write(t.h[i].name)
		w.writeString(": ")
		w.write(t.h[i].value)
		w.writeString("\r\n")
	}
	w.writeString("\r\n")
}

// forbiddenTrailer reports fields that must not travel in a trailer
// section (RFC 9110 section 6.5.1: framing, routing, connection-specific),
// and that an HTTP/2 peer would reject.
func forbiddenTrailer(name []byte) bool {
	switch string(name) {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te",
		"upgrade", "content-length", "host", "trailer":
		return true
	}
	return false
}
