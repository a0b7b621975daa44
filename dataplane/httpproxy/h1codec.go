package httpproxy

import (
	"errors"
	"io"
)

// The HTTP/1.1 codec: a buffered reader with direct access to its buffer, a
// header-block scanner and strict request/response head parsers that fill
// reusable structs of byte-slice header pairs. It is shared by the
// downstream server and the upstream client and allocates nothing per
// message once its buffers have grown to the connection's working size.

// h1Error is a protocol error with the status a server answers with.
type h1Error struct {
	status int
	msg    string
}

func (e *h1Error) Error() string { return e.msg }

var (
	errBadRequest      = &h1Error{400, "malformed request"}
	errBareLF          = &h1Error{400, "bare LF in message head"}
	errObsFold         = &h1Error{400, "obsolete line folding"}
	errBadHeaderName   = &h1Error{400, "invalid header name"}
	errBadHeaderValue  = &h1Error{400, "invalid header value"}
	errBadRequestLine  = &h1Error{400, "invalid request line"}
	errBadVersion      = &h1Error{400, "unsupported HTTP version"}
	errBadCL           = &h1Error{400, "invalid content-length"}
	errMultipleCL      = &h1Error{400, "multiple differing content-length"}
	errCLAndTE         = &h1Error{400, "both content-length and transfer-encoding"}
	errBadTE           = &h1Error{400, "transfer-encoding without final chunked"}
	errUnsupportedTE   = &h1Error{501, "unsupported transfer-encoding"}
	errMissingHost     = &h1Error{400, "missing host header"}
	errMultipleHost    = &h1Error{400, "multiple host headers"}
	errBadAuthority    = &h1Error{400, "invalid authority"}
	errHeadersTooLarge = &h1Error{431, "request headers too large"}
	errTooManyHeaders  = &h1Error{431, "too many request headers"}
	errBadChunk        = &h1Error{400, "malformed chunked encoding"}
	errBadStatusLine   = &h1Error{502, "invalid status line"}
)

// errBufferFull is returned by fill when the buffer has no room left.
var errBufferFull = errors.New("h1: buffer full")

// h1Reader is a bufio.Reader-like reader that exposes its buffer so the
// parsers can work on bytes in place.
type h1Reader struct {
	rd   io.Reader
	buf  []byte
	r, w int
	// onFill, when set, runs before each blocking read (deadline updates,
	// flushing the peer writer).
	onFill func()
}

func (b *h1Reader) reset(rd io.Reader, size int) {
	b.rd = rd
	if cap(b.buf) < size {
		b.buf = make([]byte, size)
	}
	b.buf = b.buf[:cap(b.buf)]
	b.r, b.w = 0, 0
	b.onFill = nil
}

func (b *h1Reader) buffered() int { return b.w - b.r }

// peek returns the buffered bytes without consuming them.
func (b *h1Reader) peek() []byte { return b.buf[b.r:b.w] }

func (b *h1Reader) discard(n int) { b.r += n }

// fill reads at least one more byte into the buffer, compacting first. It
// returns errBufferFull when the buffer holds len(buf) unread bytes.
func (b *h1Reader) fill() error {
	if b.r > 0 {
		if b.r == b.w {
			b.r, b.w = 0, 0
		} else if b.w == len(b.buf) {
			n := copy(b.buf, b.buf[b.r:b.w])
			b.r, b.w = 0, n
		}
	}
	if b.w == len(b.buf) {
		return errBufferFull
	}
	if b.onFill != nil {
		b.onFill()
	}
	for i := 0; i < 100; i++ {
		n, err := b.rd.Read(b.buf[b.w:])
		b.w += n
		if n > 0 {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}

// grow makes room for a header block of up to max bytes.
func (b *h1Reader) grow(max int) bool {
	if len(b.buf) >= max {
		return false
	}
	n := 2 * len(b.buf)
	if n > max {
		n = max
	}
	nb := make([]byte, n)
	copy(nb, b.buf[b.r:b.w])
	b.w -= b.r
	b.r = 0
	b.buf = nb
	return true
}

// Read lets the reader serve as an io.Reader for its buffered bytes first
// (used when splicing an upgraded connection).
func (b *h1Reader) Read(p []byte) (int, error) {
	if b.r < b.w {
		n := copy(p, b.buf[b.r:b.w])
		b.r += n
		return n, nil
	}
	return b.rd.Read(p)
}

// readHead waits until a complete message head (start line, header lines
// and the empty line) is buffered and returns its length, counted from
// b.r. Leading empty lines are skipped (RFC 9112 section 2.2). Every line
// must end in CRLF; a bare LF is an error, as in llhttp's strict mode.
// limit bounds the head size (errTooLarge when exceeded). started reports
// whether any byte of a message was seen, so callers can tell a clean close
// between messages from a truncated head.
func (b *h1Reader) readHead(limit int, tooLarge error) (n int, started bool, err error) {
	scan := 0 // bytes of the head already checked, from b.r
	for {
		buf := b.buf[b.r:b.w]
		// Skip leading CRLFs before the start line.
		for scan == 0 && len(buf) >= 2 && buf[0] == '\r' && buf[1] == '\n' {
			b.r += 2
			buf = buf[2:]
		}
		if len(buf) > 0 {
			started = true
		}
		for {
			i := indexByte(buf[scan:], '\n')
			if i < 0 {
				scan = len(buf)
				break
			}
			lf := scan + i
			if lf == 0 || buf[lf-1] != '\r' {
				return 0, started, errBareLF
			}
			scan = lf + 1
			// An empty line (just CRLF after a previous LF) ends the head.
			if lf >= 2 && buf[lf-2] == '\n' {
				return scan, true, nil
			}
			if scan > limit {
				return 0, true, tooLarge
			}
		}
		if scan > limit {
			return 0, true, tooLarge
		}
		if b.w == len(b.buf) && b.r > 0 {
			// Compact so the head can keep growing in place.
			copy(b.buf, b.buf[b.r:b.w])
			b.w -= b.r
			b.r = 0
		}
		if b.w == len(b.buf) && !b.grow(limit+2) {
			return 0, true, tooLarge
		}
		if err := b.fill(); err != nil {
			if err == errBufferFull {
				return 0, true, tooLarge
			}
			return 0, started, err
		}
	}
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// hfield is one header line; name is lower-case.
type hfield struct {
	name, value []byte
}

// hlist is a header list with an arena for values the proxy adds.
type hlist struct {
	h     []hfield
	arena []byte
}

func (l *hlist) reset() {
	l.h = l.h[:0]
	l.arena = l.arena[:0]
}

func (l *hlist) has(name string) bool {
	for i := range l.h {
		if string(l.h[i].name) == name {
			return true
		}
	}
	return false
}

// get returns the first value of name.
func (l *hlist) get(name string) ([]byte, bool) {
	for i := range l.h {
		if string(l.h[i].name) == name {
			return l.h[i].value, true
		}
	}
	return nil, false
}

func (l *hlist) del(name string) {
	j := 0
	for i := range l.h {
		if string(l.h[i].name) != name {
			l.h[j] = l.h[i]
			j++
		}
	}
	l.h = l.h[:j]
}

func (l *hlist) add(name, value string) {
	start := len(l.arena)
	l.arena = append(l.arena, name...)
	mid := len(l.arena)
	l.arena = append(l.arena, value...)
	// Slices keep pointing at the old backing array if a later append
	// reallocates the arena, which is fine: that array stays alive.
	l.h = append(l.h, hfield{name: l.arena[start:mid:mid], value: l.arena[mid:len(l.arena):len(l.arena)]})
}

func (l *hlist) addBytes(name string, value []byte) {
	start := len(l.arena)
	l.arena = append(l.arena, name...)
	mid := len(l.arena)
	l.arena = append(l.arena, value...)
	l.h = append(l.h, hfield{name: l.arena[start:mid:mid], value: l.arena[mid:len(l.arena):len(l.arena)]})
}

func (l *hlist) set(name, value string) {
	l.del(name)
	l.add(name, value)
}

// tchar reports RFC 9110 token characters.
var tchar = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// parseHeaders parses header lines from b (each ending in CRLF, the block
// ending with an empty line) into l, lower-casing names in place. maxCount
// bounds the number of lines (0 = no bound).
func parseHeaders(b []byte, l *hlist, maxCount int) error {
	for len(b) > 0 {
		end := indexByte(b, '\n')
		if end < 1 || b[end-1] != '\r' {
			return errBareLF
		}
		line := b[:end-1]
		b = b[end+1:]
		if len(line) == 0 {
			return nil
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errObsFold
		}
		colon := -1
		for i, c := range line {
			if c == ':' {
				colon = i
				break
			}
			if !tchar[c] {
				return errBadHeaderName
			}
			if 'A' <= c && c <= 'Z' {
				line[i] = c + 'a' - 'A'
			}
		}
		if colon <= 0 {
			return errBadHeaderName
		}
		v := line[colon+1:]
		for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
			v = v[1:]
		}
		for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
			v = v[:len(v)-1]
		}
		for _, c := range v {
			if (c < 0x20 && c != '\t') || c == 0x7f {
				return errBadHeaderValue
			}
		}
		if maxCount > 0 && len(l.h) >= maxCount {
			return errTooManyHeaders
		}
		l.h = append(l.h, hfield{name: line[:colon], value: v})
	}
	return errBadRequest
}

// equalFold compares b with the lower-case ASCII string s ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// trimOWS trims optional whitespace.
func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// eachToken calls fn for each comma-separated, trimmed, non-empty element
// of a list header value.
func eachToken(v []byte, fn func(tok []byte)) {
	for len(v) > 0 {
		i := indexByte(v, ',')
		var tok []byte
		if i < 0 {
			tok, v = v, nil
		} else {
			tok, v = v[:i], v[i+1:]
		}
		if tok = trimOWS(tok); len(tok) > 0 {
			fn(tok)
		}
	}
}

// hasToken reports whether the list value v contains tok (lower-case).
func hasToken(v []byte, tok string) bool {
	found := false
	eachToken(v, func(t []byte) {
		if equalFold(t, tok) {
			found = true
		}
	})
	return found
}

// parseContentLength parses a content-length value, accepting a list of
// identical values (RFC 9110 section 8.6). prev is the value from an
// earlier content-length line or -1.
func parseContentLength(v []byte, prev int64) (int64, error) {
	n := prev
	var err error
	eachToken(v, func(t []byte) {
		if err != nil {
			return
		}
		var x int64
		if len(t) > 18 {
			err = errBadCL
			return
		}
		for _, c := range t {
			if c < '0' || c > '9' {
				err = errBadCL
				return
			}
			x = x*10 + int64(c-'0')
		}
		if n >= 0 && n != x {
			err = errMultipleCL
			return
		}
		n = x
	})
	if err != nil {
		return 0, err
	}
	if n < 0 {
		return 0, errBadCL // empty value
	}
	return n, nil
}

// framing is how a message body is delimited.
type framing uint8

const (
	bodyNone framing = iota
	bodyLength
	bodyChunked
	bodyClose // response read until the connection closes
)

// teState accumulates transfer-encoding lines: chunked must be the final
// coding and appear once (else the body length is unknowable: reject), and
// we decode no other coding (501, like Envoy).
type teState struct {
	seen, chunkedLast bool
	codings, chunked  int
}

func (t *teState) add(v []byte) {
	t.seen = true
	eachToken(v, func(tok []byte) {
		t.codings++
		t.chunkedLast = equalFold(tok, "chunked")
		if t.chunkedLast {
			t.chunked++
		}
	})
}

func (t *teState) err() error {
	if !t.chunkedLast || t.chunked > 1 {
		return errBadTE
	}
	if t.codings > 1 {
		return errUnsupportedTE
	}
	return nil
}
