package dataplane

import (
	"bytes"
	"errors"
	"strings"
)

// Transport protocols as FilterChainMatch.transport_protocol names them.
const (
	transportRaw = "raw_buffer"
	transportTLS = "tls"
)

// maxPeek bounds how many bytes the inspectors may buffer: a ClientHello of
// up to 16 KB spread over records with their headers, or an HTTP/1.x request
// line of that size.
const maxPeek = 16*1024 + 64

// errClientHelloTooLarge means the first bytes look like a TLS handshake
// whose ClientHello does not fit in maxPeek. Envoy's tls_inspector closes
// such connections rather than guess.
var errClientHelloTooLarge = errors.New("tls ClientHello larger than 16 KB")

// inspection is what the listener filters learned from the first bytes.
type inspection struct {
	transport string   // transportRaw or transportTLS
	sni       string   // lower-case server name from the ClientHello
	alpn      []string // ALPN offered by the TLS client, or what the HTTP inspector saw
}

// inspect classifies the bytes read so far like Envoy's tls_inspector
// followed by http_inspector. more is true when the answer depends on bytes
// not yet received; the caller reads more and calls again (or gives up at EOF,
// timeout or maxPeek and uses what final(buf) says).
func inspect(buf []byte) (res inspection, more bool, err error) {
	if len(buf) == 0 {
		return inspection{transport: transportRaw}, true, nil
	}
	if looksLikeTLS(buf) {
		res, more, err = inspectTLS(buf)
		if err == nil && !more {
			return res, false, nil
		}
		if more || errors.Is(err, errClientHelloTooLarge) {
			return res, more, err
		}
		// A malformed handshake is not TLS as far as matching goes: Envoy
		// falls through to raw_buffer.
	}
	return inspectHTTP(buf)
}

// looksLikeTLS reports whether buf may start a TLS handshake record: content
// type 22 and protocol major version 3 (SSL 3.0 to TLS 1.3 records).
func looksLikeTLS(buf []byte) bool {
	if buf[0] != 0x16 {
		return false
	}
	return len(buf) < 2 || buf[1] == 3
}

var errNotClientHello = errors.New("not a TLS ClientHello")

// inspectTLS reassembles the first handshake message from as many handshake
// records as it takes (a ClientHello may be split across records and TCP
// segments) and parses SNI and ALPN out of it.
func inspectTLS(buf []byte) (inspection, bool, error) {
	var msg []byte
	rest := buf
	for {
		if len(rest) < 5 {
			if len(buf) >= maxPeek {
				return inspection{}, false, errClientHelloTooLarge
			}
			return inspection{}, true, nil
		}
		if rest[0] != 0x16 || rest[1] != 3 {
			return inspection{}, false, errNotClientHello
		}
		n := int(rest[3])<<8 | int(rest[4])
		if n == 0 || n > 16384+2048 {
			return inspection{}, false, errNotClientHello
		}
		if len(rest) < 5+n {
			if 5+n+(len(buf)-len(rest)) > maxPeek {
				return inspection{}, false, errClientHelloTooLarge
			}
			return inspection{}, true, nil
		}
		msg = append(msg, rest[5:5+n]...)
		rest = rest[5+n:]
		if len(msg) < 4 {
			continue
		}
		if msg[0] != 1 { // handshake type client_hello
			return inspection{}, false, errNotClientHello
		}
		mlen := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
		if mlen > maxPeek {
			return inspection{}, false, errClientHelloTooLarge
		}
		if len(msg) >= 4+mlen {
			return parseClientHello(msg[4 : 4+mlen])
		}
	}
}

// parseClientHello extracts server_name and ALPN from a ClientHello body
// (RFC 8446 section 4.1.2, RFC 6066 section 3, RFC 7301).
func parseClientHello(b []byte) (inspection, bool, error) {
	res := inspection{transport: transportTLS}
	p := parser(b)
	if !p.skip(2+32) || // legacy_version, random
		!p.skipVec8() || // legacy_session_id
		!p.skipVec16() || // cipher_suites
		!p.skipVec8() { // legacy_compression_methods
		return inspection{}, false, errNotClientHello
	}
	if len(p) == 0 {
		return res, false, nil // no extensions (SSLv3-style hello)
	}
	exts, ok := p.vec16()
	if !ok {
		return inspection{}, false, errNotClientHello
	}
	for len(exts) > 0 {
		typ, ok1 := exts.u16()
		body, ok2 := exts.vec16()
		if !ok1 || !ok2 {
			return inspection{}, false, errNotClientHello
		}
		switch typ {
		case 0: // server_name
			list, ok := body.vec16()
			if !ok {
				return inspection{}, false, errNotClientHello
			}
			for len(list) > 0 {
				kind, ok1 := list.u8()
				name, ok2 := list.vec16()
				if !ok1 || !ok2 {
					return inspection{}, false, errNotClientHello
				}
				if kind == 0 && res.sni == "" { // host_name
					res.sni = strings.ToLower(string(name))
				}
			}
		case 16: // application_layer_protocol_negotiation
			list, ok := body.vec16()
			if !ok {
				return inspection{}, false, errNotClientHello
			}
			for len(list) > 0 {
				proto, ok := list.vec8()
				if !ok || len(proto) == 0 {
					return inspection{}, false, errNotClientHello
				}
				res.alpn = append(res.alpn, string(proto))
			}
		}
	}
	return res, false, nil
}

// parser reads TLS presentation-language vectors.
type parser []byte

func (p *parser) skip(n int) bool {
	if len(*p) < n {
		return false
	}
	*p = (*p)[n:]
	return true
}

func (p *parser) u8() (byte, bool) {
	if len(*p) < 1 {
		return 0, false
	}
	v := (*p)[0]
	*p = (*p)[1:]
	return v, true
}

func (p *parser) u16() (int, bool) {
	if len(*p) < 2 {
		return 0, false
	}
	v := int((*p)[0])<<8 | int((*p)[1])
	*p = (*p)[2:]
	return v, true
}

func (p *parser) vec8() (parser, bool) {
	n, ok := p.u8()
	if !ok || len(*p) < int(n) {
		return nil, false
	}
	v := (*p)[:n]
	*p = (*p)[n:]
	return v, true
}

func (p *parser) vec16() (parser, bool) {
	n, ok := p.u16()
	if !ok || len(*p) < n {
		return nil, false
	}
	v := (*p)[:n]
	*p = (*p)[n:]
	return v, true
}

func (p *parser) skipVec8() bool  { _, ok := p.vec8(); return ok }
func (p *parser) skipVec16() bool { _, ok := p.vec16(); return ok }

// h2Preface is the HTTP/2 client connection preface (RFC 9113 section 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// inspectHTTP is the http_inspector: the h2 prior-knowledge preface gives
// "h2c"; a well-formed HTTP/1.x request line gives "http/1.1" or "http/1.0".
// Anything else is raw bytes with no application protocol.
func inspectHTTP(buf []byte) (inspection, bool, error) {
	res := inspection{transport: transportRaw}
	n := min(len(buf), len(h2Preface))
	if string(buf[:n]) == h2Preface[:n] {
		if n < len(h2Preface) {
			return res, true, nil
		}
		res.alpn = alpnH2C
		return res, false, nil
	}
	// method SP request-target SP HTTP-version CRLF
	sp := -1
	for i, c := range buf {
		if c == ' ' {
			sp = i
			break
		}
		if !isTokenChar(c) {
			return res, false, nil
		}
	}
	if sp == 0 {
		return res, false, nil
	}
	if sp < 0 {
		return res, len(buf) < maxPeek, nil
	}
	line := buf[sp+1:]
	eol := bytes.IndexByte(line, '\n')
	if eol < 0 {
		for _, c := range line {
			if c < 0x21 && c != ' ' && c != '\r' {
				return res, false, nil
			}
		}
		return res, len(buf) < maxPeek, nil
	}
	line = bytes.TrimSuffix(line[:eol], []byte{'\r'})
	sp2 := bytes.LastIndexByte(line, ' ')
	if sp2 <= 0 {
		return res, false, nil
	}
	switch string(line[sp2+1:]) {
	case "HTTP/1.1":
		res.alpn = alpnHTTP11
	case "HTTP/1.0":
		res.alpn = alpnHTTP10
	}
	return res, false, nil
}

// Shared, never modified ALPN slices so inspection allocates nothing for
// plaintext HTTP.
var (
	alpnH2C    = []string{"h2c"}
	alpnHTTP11 = []string{"http/1.1"}
	alpnHTTP10 = []string{"http/1.0"}
)

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110
// section 5.6.2).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
