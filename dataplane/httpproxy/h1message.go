package httpproxy

import (
	"strings"
	"unsafe"
)

// h1Request is a parsed request head. Its byte slices point into raw, a
// copy of the head owned by the request, so they stay valid while the
// connection's read buffer moves on to the body.
type h1Request struct {
	raw    []byte
	method []byte
	target []byte
	minor  int // HTTP/1.minor
	hdr    hlist

	// authority is the Host header, or the authority of an absolute-form
	// target (which takes precedence, RFC 9112 section 3.2.2).
	authority []byte
	// path is the target in origin form ("/" for an absolute-form target
	// without a path; "*" for OPTIONS *).
	path []byte

	framing       framing
	contentLength int64

	keepAlive      bool
	expectContinue bool
	// upgrade is set for a websocket upgrade (Connection: upgrade and
	// Upgrade: websocket).
	upgrade bool
}

// parseRequest parses the head in b (as found by readHead) into r. b is
// copied into r.raw first. maxHeaders bounds the header count.
func (r *h1Request) parse(b []byte, maxHeaders int) error {
	r.raw = append(r.raw[:0], b...)
	r.hdr.reset()
	r.authority, r.path = nil, nil
	r.framing, r.contentLength = bodyNone, 0
	r.keepAlive, r.expectContinue, r.upgrade = false, false, false
	b = r.raw

	// Request line: method SP request-target SP HTTP-version CRLF, with
	// exactly one SP between the parts.
	eol := indexByte(b, '\n')
	line := b[:eol-1]
	sp := indexByte(line, ' ')
	if sp <= 0 {
		return errBadRequestLine
	}
	r.method = line[:sp]
	for _, c := range r.method {
		if !tchar[c] {
			return errBadRequestLine
		}
	}
	rest := line[sp+1:]
	sp = indexByte(rest, ' ')
	if sp <= 0 {
		return errBadRequestLine
	}
	r.target = rest[:sp]
	for _, c := range r.target {
		if c <= 0x20 || c >= 0x7f {
			return errBadRequestLine
		}
	}
	v := rest[sp+1:]
	if len(v) != 8 || string(v[:7]) != "HTTP/1." {
		return errBadVersion
	}
	switch v[7] {
	case '1':
		r.minor = 1
	case '0':
		r.minor = 0
	default:
		return errBadVersion
	}

	if err := parseHeaders(b[eol+1:], &r.hdr, maxHeaders); err != nil {
		return err
	}

	var te teState
	hasCL, hasHost := false, false
	connClose, connKeepAlive, connUpgrade, upgradeWS := false, false, false, false
	cl := int64(-1)
	for i := range r.hdr.h {
		f := &r.hdr.h[i]
		switch string(f.name) {
		case "host":
			if hasHost {
				return errMultipleHost
			}
			hasHost = true
			r.authority = f.value
		case "content-length":
			n, err := parseContentLength(f.value, cl)
			if err != nil {
				return err
			}
			cl, hasCL = n, true
		case "transfer-encoding":
			te.add(f.value)
		case "connection":
			eachToken(f.value, func(t []byte) {
				switch {
				case equalFold(t, "close"):
					connClose = true
				case equalFold(t, "keep-alive"):
					connKeepAlive = true
				case equalFold(t, "upgrade"):
					connUpgrade = true
				}
			})
		case "expect":
			if equalFold(f.value, "100-continue") {
				r.expectContinue = true
			}
		case "upgrade":
			if hasToken(f.value, "websocket") {
				upgradeWS = true
			}
		}
	}
	switch {
	case te.seen && hasCL:
		return errCLAndTE
	case te.seen:
		if r.minor == 0 {
			return errBadTE // RFC 9112 section 6.1: faulty framing in 1.0
		}
		if err := te.err(); err != nil {
			return err
		}
		r.framing = bodyChunked
	case hasCL:
		r.contentLength = cl
		if cl > 0 {
			r.framing = bodyLength
		}
	}
	if r.minor == 1 {
		r.keepAlive = !connClose
	} else {
		r.keepAlive = connKeepAlive && !connClose
	}
	r.upgrade = connUpgrade && upgradeWS

	// Request target forms (RFC 9112 section 3.2).
	t := r.target
	switch {
	case t[0] == '/':
		r.path = t
	case len(t) == 1 && t[0] == '*':
		if string(r.method) != "OPTIONS" {
			return errBadRequestLine
		}
		r.path = t
	case hasPrefixFold(t, "http://") || hasPrefixFold(t, "https://"):
		s := t[indexByte(t, ':')+3:]
		end := len(s)
		for i, c := range s {
			if c == '/' || c == '?' || c == '#' {
				end = i
				break
			}
		}
		if end == 0 {
			return errBadRequestLine
		}
		r.authority = s[:end]
		hasHost = true
		if end == len(s) {
			r.path = slash
		} else if s[end] == '?' {
			// Origin form needs a leading "/" before the query.
			r.path = append(append([]byte(nil), '/'), s[end:]...)
		} else {
			r.path = s[end:]
		}
	default:
		// CONNECT's authority form is not proxied by this codec.
		return errBadRequestLine
	}
	if !hasHost && r.minor == 1 {
		return errMissingHost
	}
	// The authority routes the request and becomes the upstream Host:
	// only host[:port] characters (Envoy's authorityIsValid).
	if !validAuthority(bstr(r.authority)) {
		return errBadAuthority
	}
	return nil
}

var slash = []byte("/")

func hasPrefixFold(b []byte, p string) bool {
	return len(b) >= len(p) && equalFold(b[:len(p)], p)
}

// bstr views b as a string without copying. The string is valid only while
// b is not modified, which for request fields means for the duration of
// the request: callers must not keep such strings past it.
func bstr(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// policy.Request over the parsed head. Strings alias the request's raw
// head (see bstr): routing uses them only while deciding.

func (r *h1Request) Authority() string { return bstr(r.authority) }
func (r *h1Request) Path() string      { return bstr(r.path) }
func (r *h1Request) Method() string    { return bstr(r.method) }

func (r *h1Request) Header(name string) (string, bool) {
	if len(name) > 0 && name[0] == ':' {
		switch name {
		case ":authority":
			return bstr(r.authority), true
		case ":path":
			return bstr(r.path), true
		case ":method":
			return bstr(r.method), true
		case ":scheme":
			return "http", true
		}
		return "", false
	}
	if name == "host" {
		return bstr(r.authority), len(r.authority) > 0
	}
	first := -1
	n := 0
	for i := range r.hdr.h {
		if string(r.hdr.h[i].name) == name {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	switch n {
	case 0:
		return "", false
	case 1:
		return bstr(r.hdr.h[first].value), true
	}
	// Several lines: join with "," in a buffer owned by the request. A new
	// buffer each time keeps earlier returned strings intact.
	var sb strings.Builder
	for i := range r.hdr.h {
		if string(r.hdr.h[i].name) == name {
			if sb.Len() > 0 {
				sb.WriteByte(',')
			}
			sb.Write(r.hdr.h[i].value)
		}
	}
	return sb.String(), true
}

// h1Response is a parsed response head; slices point into raw.
type h1Response struct {
	raw    []byte
	minor  int
	status int
	hdr    hlist

	framing       framing
	contentLength int64
	keepAlive     bool
}

// parse parses a response head. noBody is set for responses to HEAD (and
// 1xx/204/304 are bodiless by status).
func (r *h1Response) parse(b []byte, noBody bool) error {
	r.raw = append(r.raw[:0], b...)
	r.hdr.reset()
	r.framing, r.contentLength, r.keepAlive = bodyNone, -1, false
	b = r.raw
	eol := indexByte(b, '\n')
	line := b[:eol-1]
	// HTTP-version SP 3DIGIT [SP reason-phrase]
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' {
		return errBadStatusLine
	}
	switch line[7] {
	case '0':
		r.minor = 0
	case '1':
		r.minor = 1
	default:
		return errBadStatusLine
	}
	s := 0
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return errBadStatusLine
		}
		s = s*10 + int(c-'0')
	}
	if s < 100 || (len(line) > 12 && line[12] != ' ') {
		return errBadStatusLine
	}
	r.status = s
	if err := parseHeaders(b[eol+1:], &r.hdr, 0); err != nil {
		return errBadStatusLine
	}
	var te teState
	hasCL := false
	connClose, connKeepAlive := false, false
	cl := int64(-1)
	for i := range r.hdr.h {
		f := &r.hdr.h[i]
		switch string(f.name) {
		case "content-length":
			n, err := parseContentLength(f.value, cl)
			if err != nil {
				return errBadStatusLine
			}
			cl, hasCL = n, true
		case "transfer-encoding":
			te.add(f.value)
		case "connection":
			eachToken(f.value, func(t []byte) {
				switch {
				case equalFold(t, "close"):
					connClose = true
				case equalFold(t, "keep-alive"):
					connKeepAlive = true
				}
			})
		}
	}
	if r.minor == 1 {
		r.keepAlive = !connClose
	} else {
		r.keepAlive = connKeepAlive && !connClose
	}
	if hasCL {
		r.contentLength = cl
	}
	switch {
	case noBody || s < 200 || s == 204 || s == 304:
		r.framing = bodyNone
	case te.seen:
		if te.err() != nil {
			// Unknown codings: the only safe delimiter left is close.
			r.framing, r.keepAlive = bodyClose, false
			break
		}
		r.framing = bodyChunked
		if hasCL {
			// Both: chunked wins (RFC 9112 section 6.3) but the
			// connection is not trusted for reuse.
			r.keepAlive = false
			r.contentLength = -1
		}
	case hasCL:
		r.framing = bodyLength
		if cl == 0 {
			r.framing = bodyNone
		}
	default:
		r.framing, r.keepAlive = bodyClose, false
	}
	return nil
}
