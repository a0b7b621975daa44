package telemetry

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/meshlet/meshlet/state"
)

// DefaultAccessLogFormat is Envoy's format when an access log sets none.
const DefaultAccessLogFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" ` +
	`"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` + "\n"

// opKind is one command operator, resolved when the format is compiled so
// rendering is a switch, not a parse.
type opKind uint8

const (
	opLiteral opKind = iota
	opStartTime
	opProtocol
	opResponseCode
	opResponseFlags
	opBytesReceived
	opBytesSent
	opDuration
	opUpstreamHost
	opUpstreamCluster
	opAttempts
	opRemoteAddr
	opRemoteAddrNoPort
	opLocalAddr
	opPeerURISAN
	opRouteName
	opHostname
	opReq
	opResp
)

var opNames = map[string]opKind{
	"START_TIME": opStartTime, "PROTOCOL": opProtocol, "RESPONSE_CODE": opResponseCode,
	"RESPONSE_FLAGS": opResponseFlags, "BYTES_RECEIVED": opBytesReceived, "BYTES_SENT": opBytesSent,
	"DURATION": opDuration, "UPSTREAM_HOST": opUpstreamHost, "UPSTREAM_CLUSTER": opUpstreamCluster,
	"UPSTREAM_REQUEST_ATTEMPT_COUNT": opAttempts,
	"DOWNSTREAM_REMOTE_ADDRESS":      opRemoteAddr, "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": opRemoteAddrNoPort,
	"DOWNSTREAM_LOCAL_ADDRESS": opLocalAddr, "DOWNSTREAM_PEER_URI_SAN": opPeerURISAN,
	"ROUTE_NAME": opRouteName, "HOSTNAME": opHostname,
	"REQ": opReq, "REQUEST_HEADER": opReq, "RESP": opResp, "RESPONSE_HEADER": opResp,
}

// numeric operators render as JSON numbers when they are a dictionary
// value on their own.
func (k opKind) numeric() bool {
	switch k {
	case opResponseCode, opBytesReceived, opBytesSent, opDuration, opAttempts:
		return true
	}
	return false
}

// segment is a literal or an operator with its arguments.
type segment struct {
	kind    opKind
	literal string
	// header and alt are the lower-cased header names of %REQ(header?alt)%.
	header, alt string
	// maxLen truncates the value when > 0.
	maxLen int
}

// format is a compiled format string.
type format []segment

// compileFormat parses s once. Operators it does not know are an error;
// a % that does not open an operator is literal text, as in Envoy.
func compileFormat(s string) (format, error) {
	var f format
	lit := strings.Builder{}
	flush := func() {
		if lit.Len() > 0 {
			f = append(f, segment{kind: opLiteral, literal: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			lit.WriteByte(s[i])
			continue
		}
		end := strings.IndexByte(s[i+1:], '%')
		if end < 0 {
			lit.WriteString(s[i:])
			break
		}
		tok := s[i+1 : i+1+end]
		seg, ok, err := parseOperator(tok)
		if err != nil {
			return nil, err
		}
		if !ok {
			lit.WriteByte('%')
			continue
		}
		flush()
		f = append(f, seg)
		i += end + 1
	}
	flush()
	return f, nil
}

// parseOperator parses OP, OP(ARG) or OP(ARG):N. ok is false when tok is
// not shaped like an operator at all.
func parseOperator(tok string) (segment, bool, error) {
	name, arg, hasArg, rest := tok, "", false, ""
	if p := strings.IndexByte(tok, '('); p >= 0 {
		q := strings.LastIndexByte(tok, ')')
		if q < p {
			return segment{}, false, fmt.Errorf("operator %%%s%%: missing )", tok)
		}
		name, arg, hasArg, rest = tok[:p], tok[p+1:q], true, tok[q+1:]
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; (c < 'A' || c > 'Z') && c != '_' && (c < '0' || c > '9') {
			return segment{}, false, nil
		}
	}
	if name == "" {
		return segment{}, false, nil
	}
	kind, ok := opNames[name]
	if !ok {
		return segment{}, false, fmt.Errorf("command operator %%%s%% is not supported", name)
	}
	seg := segment{kind: kind}
	takesArg := kind == opReq || kind == opResp
	switch {
	case takesArg && arg == "":
		return segment{}, false, fmt.Errorf("command operator %%%s%% needs a header name", name)
	case !takesArg && hasArg:
		return segment{}, false, fmt.Errorf("command operator %%%s%% takes no argument", name)
	}
	if takesArg {
		h, alt, _ := strings.Cut(arg, "?")
		seg.header, seg.alt = strings.ToLower(h), strings.ToLower(alt)
	}
	if rest != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(rest, ":"))
		if !strings.HasPrefix(rest, ":") || err != nil || n <= 0 {
			return segment{}, false, fmt.Errorf("operator %%%s%%: bad length suffix %q", tok, rest)
		}
		seg.maxLen = n
	}
	return seg, true, nil
}

var hostname = func() string {
	h, _ := os.Hostname()
	return h
}()

// view is what an operator reads: an HTTP or a TCP record. Exactly one of
// h and t is set.
type view struct {
	h *HTTPRecord
	t *TCPRecord
}

func (v view) conn() *Conn {
	if v.h != nil {
		return &v.h.Conn
	}
	return &v.t.Conn
}

// appendValue appends the value of seg, or reports ok false when it has
// none (rendered "-" in text, null in JSON). Numbers are appended as
// digits; the caller decides on quoting.
func appendValue(b []byte, seg *segment, v view) ([]byte, bool) {
	switch seg.kind {
	case opLiteral:
		return append(b, seg.literal...), true
	case opStartTime:
		start := v.start()
		if start.IsZero() {
			return b, false
		}
		return start.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z"), true
	case opProtocol:
		if v.h == nil || v.h.Protocol == "" {
			return b, false
		}
		return append(b, v.h.Protocol...), true
	case opResponseCode:
		if v.h == nil {
			return append(b, '0'), true
		}
		return strconv.AppendInt(b, int64(v.h.ResponseCode), 10), true
	case opResponseFlags:
		f := v.flags()
		if f == "" {
			return b, false
		}
		return append(b, f...), true
	case opBytesReceived:
		return strconv.AppendInt(b, v.bytes(true), 10), true
	case opBytesSent:
		return strconv.AppendInt(b, v.bytes(false), 10), true
	case opDuration:
		return strconv.AppendInt(b, v.duration().Milliseconds(), 10), true
	case opUpstreamHost:
		return appendStr(b, v.upstream(true))
	case opUpstreamCluster:
		return appendStr(b, v.upstream(false))
	case opAttempts:
		if v.h == nil {
			return b, false
		}
		return strconv.AppendInt(b, int64(v.h.Attempts), 10), true
	case opRemoteAddr:
		if c := v.conn(); c.Remote.IsValid() {
			return c.Remote.AppendTo(b), true
		}
		return b, false
	case opRemoteAddrNoPort:
		if c := v.conn(); c.Remote.IsValid() {
			return c.Remote.Addr().AppendTo(b), true
		}
		return b, false
	case opLocalAddr:
		if c := v.conn(); c.Local.IsValid() {
			return c.Local.AppendTo(b), true
		}
		return b, false
	case opPeerURISAN:
		return appendStr(b, v.conn().PeerPrincipal)
	case opRouteName:
		if v.h == nil {
			return b, false
		}
		return appendStr(b, v.h.RouteName)
	case opHostname:
		return appendStr(b, hostname)
	case opReq:
		if v.h == nil {
			return b, false
		}
		val := requestHeader(v.h, seg.header)
		if val == "" && seg.alt != "" {
			val = requestHeader(v.h, seg.alt)
		}
		return appendStr(b, val)
	case opResp:
		if v.h == nil || v.h.Headers == nil {
			return b, false
		}
		val := v.h.Headers.ResponseHeader(seg.header)
		if val == "" && seg.alt != "" {
			val = v.h.Headers.ResponseHeader(seg.alt)
		}
		return appendStr(b, val)
	}
	return b, false
}

func appendStr(b []byte, s string) ([]byte, bool) {
	if s == "" {
		return b, false
	}
	return append(b, s...), true
}

// requestHeader serves the pseudo-headers and the headers the record keeps
// from its fields, the rest through Headers.
func requestHeader(r *HTTPRecord, name string) string {
	switch name {
	case ":method":
		return r.Method
	case ":path":
		return r.Path
	case ":authority", "host":
		return r.Authority
	case "x-request-id":
		return r.RequestID
	case "user-agent":
		return r.UserAgent
	}
	if r.Headers == nil {
		return ""
	}
	return r.Headers.RequestHeader(name)
}

func (v view) start() time.Time {
	if v.h != nil {
		return v.h.Start
	}
	return v.t.Start
}

func (v view) duration() time.Duration {
	if v.h != nil {
		return v.h.Duration
	}
	return v.t.Duration
}

func (v view) flags() string {
	if v.h != nil {
		return v.h.ResponseFlags
	}
	return v.t.ResponseFlags
}

func (v view) bytes(received bool) int64 {
	switch {
	case v.h != nil && received:
		return v.h.BytesReceived
	case v.h != nil:
		return v.h.BytesSent
	case received:
		return v.t.BytesReceived
	}
	return v.t.BytesSent
}

func (v view) upstream(host bool) string {
	switch {
	case v.h != nil && host:
		return v.h.UpstreamHost
	case v.h != nil:
		return v.h.UpstreamCluster
	case host:
		return v.t.UpstreamHost
	}
	return v.t.UpstreamCluster
}

// appendText renders f as a text line. Values longer than their :N suffix
// are cut; missing values are "-" unless omitEmpty.
func (f format) appendText(b []byte, v view, omitEmpty bool) []byte {
	for i := range f {
		seg := &f[i]
		start := len(b)
		var ok bool
		b, ok = appendValue(b, seg, v)
		if !ok {
			if !omitEmpty {
				b = append(b, '-')
			}
			continue
		}
		if seg.maxLen > 0 && len(b)-start > seg.maxLen {
			b = b[:start+seg.maxLen]
		}
	}
	return b
}

// jsonField is a compiled format-dictionary entry.
type jsonField struct {
	// key is the JSON-encoded key followed by ':'.
	key     []byte
	format  format
	nested  []jsonField
	literal string
	// typed marks a value that is one numeric operator: written as a JSON
	// number, not a string.
	typed bool
	// single marks a value that is one operator: null when it has no
	// value, rather than "-".
	single bool
}

func compileJSON(fields []state.AccessLogJSONField) ([]jsonField, error) {
	out := make([]jsonField, 0, len(fields))
	for _, f := range fields {
		jf := jsonField{key: append(appendJSONString(nil, f.Key), ':')}
		switch {
		case f.Nested != nil:
			n, err := compileJSON(f.Nested)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.Key, err)
			}
			jf.nested = n
		case f.IsFormat:
			ff, err := compileFormat(f.Format)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.Key, err)
			}
			jf.format = ff
			if len(ff) == 1 && ff[0].kind != opLiteral {
				jf.single = true
				jf.typed = ff[0].kind.numeric() && ff[0].maxLen == 0
			}
		default:
			jf.literal = f.Literal
		}
		out = append(out, jf)
	}
	return out, nil
}

// appendJSON renders fields as one JSON object. scratch holds string
// values before escaping; it is returned for reuse.
func appendJSON(b, scratch []byte, fields []jsonField, v view, omitEmpty bool) ([]byte, []byte) {
	b = append(b, '{')
	first := true
	for i := range fields {
		f := &fields[i]
		mark := len(b)
		if !first {
			b = append(b, ',')
		}
		b = append(b, f.key...)
		switch {
		case f.nested != nil:
			b, scratch = appendJSON(b, scratch, f.nested, v, omitEmpty)
		case f.format == nil && !f.single && f.literal != "":
			b = append(b, f.literal...)
		case f.single:
			var ok bool
			scratch, ok = appendValue(scratch[:0], &f.format[0], v)
			if ok && f.format[0].maxLen > 0 && len(scratch) > f.format[0].maxLen {
				scratch = scratch[:f.format[0].maxLen]
			}
			switch {
			case !ok && omitEmpty:
				b = b[:mark]
				continue
			case !ok:
				b = append(b, "null"...)
			case f.typed:
				b = append(b, scratch...)
			default:
				b = appendJSONBytes(b, scratch)
			}
		default:
			scratch = f.format.appendText(scratch[:0], v, omitEmpty)
			b = appendJSONBytes(b, scratch)
		}
		first = false
	}
	return append(b, '}'), scratch
}

const hexDigits = "0123456789abcdef"

func appendJSONString(b []byte, s string) []byte { return appendJSONBytes(b, []byte(s)) }

// appendJSONBytes appends s as a JSON string. Bytes that are not UTF-8
// become U+FFFD so every line stays valid JSON.
func appendJSONBytes(b []byte, s []byte) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRune(s[i:])
			if r == utf8.RuneError && n == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[i:i+n]...)
			}
			i += n - 1
			continue
		}
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
