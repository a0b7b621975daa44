package httpproxy

import (
	"net/textproto"
	"net/url"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Request header blocks (and trailer blocks) of the downstream server are
// decoded here, not by the Framer's ReadMetaHeaders: that builds a
// MetaHeadersFrame, an emit closure with its captured state and a growing
// field slice for every block. One decoder, one emit function and a field
// slice reused per connection leave only the strings HPACK literals need.
//
// The checks are x/net's readMetaFrame's, in the same order and with the
// same outcome, so that clients see the same errors as before:
//   - an invalid field value, an invalid regular field name or a pseudo
//     field after a regular one stops decoding into fields; any later
//     CONTINUATION of that block is a connection error (PROTOCOL), and the
//     block's end a stream error (PROTOCOL);
//   - the decoded header list is bounded by SETTINGS_MAX_HEADER_LIST_SIZE
//     (a "trailer" field has its own budget): past it, fields are dropped
//     and the block is truncated (the request gets a 431);
//   - a fragment larger than twice what the list budgets have left is a
//     connection error (PROTOCOL);
//   - HPACK errors are connection errors (COMPRESSION);
//   - unknown or duplicate pseudo fields, or request and response pseudo
//     fields mixed, are a stream error (PROTOCOL).
//
// The byte budget across HEADERS and CONTINUATIONs (errH2sHeaderFlood) and
// request_headers_timeout stay with h2sFrameBudget, which the read loop
// resets only between blocks.

// Pseudo fields of a block, as bits.
const (
	h2sPseudoMethod = 1 << iota
	h2sPseudoPath
	h2sPseudoScheme
	h2sPseudoAuthority
	h2sPseudoProtocol
	h2sPseudoStatus
)

// h2sBlock is the header block being read (HEADERS plus CONTINUATIONs).
// Read loop only; a finished block is consumed before the next frame is
// read, so fields is reused.
type h2sBlock struct {
	dec      *hpack.Decoder
	emitFunc func(hpack.HeaderField)
	maxList  uint32

	open     bool // HEADERS seen, END_HEADERS not yet
	streamID uint32
	end      bool // END_STREAM on the HEADERS frame

	fields                                            []hpack.HeaderField // regular fields, in order
	method, path, scheme, authority, protocol, status string
	pseudo                                            int // h2sPseudo* bits seen
	npseudo                                           int // pseudo fields kept
	badPseud                                          bool

	headersLeft  uint32
	trailersLeft uint32
	truncated    bool // over the header list limit: fields dropped
	invalid      bool // a malformed field: the block is a stream error
	sawRegular   bool
}

func (b *h2sBlock) init(maxHeaderList uint32) {
	if maxHeaderList == 0 {
		maxHeaderList = 16 << 20 // x/net's Framer default
	}
	b.maxList = maxHeaderList
	b.dec = hpack.NewDecoder(4096, nil)
	if int(maxHeaderList) > 0 {
		b.dec.SetMaxStringLength(int(maxHeaderList))
	}
	b.emitFunc = b.emit
	b.dec.SetEmitFunc(b.emitFunc)
}

// start begins the block of a HEADERS frame.
func (b *h2sBlock) start(f *http2.HeadersFrame) {
	b.open = true
	b.streamID = f.StreamID
	b.end = f.StreamEnded()
	clear(b.fields) // drop the previous block's strings
	b.fields = b.fields[:0]
	b.method, b.path, b.scheme, b.authority, b.protocol, b.status = "", "", "", "", "", ""
	b.pseudo, b.npseudo, b.badPseud = 0, 0, false
	b.headersLeft, b.trailersLeft = b.maxList, b.maxList
	b.truncated, b.invalid, b.sawRegular = false, false, false
	b.dec.SetEmitEnabled(true)
}

func (b *h2sBlock) emit(hf hpack.HeaderField) {
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		b.invalid = true
	}
	isPseudo := len(hf.Name) > 0 && hf.Name[0] == ':'
	if isPseudo {
		if b.sawRegular {
			b.invalid = true
		}
	} else {
		b.sawRegular = true
		if !validWireName(hf.Name) {
			b.invalid = true
		}
	}
	if b.invalid {
		b.dec.SetEmitEnabled(false)
		return
	}
	left := &b.headersLeft
	var size uint32
	if hf.Name == "trailer" {
		left = &b.trailersLeft
		n := strings.Count(hf.Value, ",") + 1
		size = uint32(len(hf.Value)-n+1) + uint32(n)*hpack.HeaderField{}.Size()
	} else {
		size = hf.Size()
	}
	if size > *left {
		b.dec.SetEmitEnabled(false)
		b.truncated = true
		b.headersLeft, b.trailersLeft = 0, 0
		return
	}
	*left -= size
	if isPseudo {
		b.addPseudo(hf)
		return
	}
	b.fields = append(b.fields, hf)
}

// addPseudo keeps a pseudo field; unknown and repeated ones fail the block
// at its end, like x/net's checkPseudos.
func (b *h2sBlock) addPseudo(hf hpack.HeaderField) {
	b.npseudo++
	var bit int
	switch hf.Name {
	case ":method":
		bit, b.method = h2sPseudoMethod, hf.Value
	case ":path":
		bit, b.path = h2sPseudoPath, hf.Value
	case ":scheme":
		bit, b.scheme = h2sPseudoScheme, hf.Value
	case ":authority":
		bit, b.authority = h2sPseudoAuthority, hf.Value
	case ":protocol":
		bit, b.protocol = h2sPseudoProtocol, hf.Value
	case ":status":
		bit, b.status = h2sPseudoStatus, hf.Value
	default:
		b.badPseud = true
		return
	}
	if b.pseudo&bit != 0 {
		b.badPseud = true // duplicate
	}
	b.pseudo |= bit
}

// write decodes one fragment of the block; done reports its end. A
// returned error is a connection error; a block that decoded but is
// malformed reports that through streamErr.
func (b *h2sBlock) write(frag []byte, last bool) (done bool, err error) {
	if int64(len(frag)) > 2*(int64(b.headersLeft)+int64(b.trailersLeft)) {
		return false, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if b.invalid {
		// Decoding stopped tracking sizes at the invalid field.
		return false, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	if _, err := b.dec.Write(frag); err != nil {
		return false, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if !last {
		return false, nil
	}
	b.open = false
	if err := b.dec.Close(); err != nil {
		return false, http2.ConnectionError(http2.ErrCodeCompression)
	}
	return true, nil
}

// streamErr reports whether the finished block is malformed: the stream
// is reset with PROTOCOL_ERROR, the connection goes on.
func (b *h2sBlock) streamErr() bool {
	if b.invalid || b.badPseud {
		return true
	}
	const request = h2sPseudoMethod | h2sPseudoPath | h2sPseudoScheme | h2sPseudoAuthority | h2sPseudoProtocol
	return b.pseudo&request != 0 && b.pseudo&h2sPseudoStatus != 0
}

// onHeadersFrame and onContinuation feed the block; a complete one goes to
// onHeaderBlock. The Framer already enforces that CONTINUATION frames
// follow their HEADERS without anything in between.
func (c *h2sConn) onHeadersFrame(f *http2.HeadersFrame) error {
	c.blk.start(f)
	done, err := c.blk.write(f.HeaderBlockFragment(), f.HeadersEnded())
	if err != nil || !done {
		return err
	}
	return c.onHeaderBlock(&c.blk)
}

func (c *h2sConn) onContinuation(f *http2.ContinuationFrame) error {
	if !c.blk.open || f.StreamID != c.blk.streamID {
		return http2.ConnectionError(http2.ErrCodeProtocol) // the Framer rules this out
	}
	done, err := c.blk.write(f.HeaderBlockFragment(), f.HeadersEnded())
	if err != nil || !done {
		return err
	}
	return c.onHeaderBlock(&c.blk)
}

// onHeaderBlock handles a complete block: a malformed one resets its
// stream only, as ReadMetaHeaders' StreamError did.
func (c *h2sConn) onHeaderBlock(b *h2sBlock) error {
	if b.streamErr() {
		c.mu.Lock()
		if b.streamID > c.maxClientID {
			c.maxClientID = b.streamID
		}
		c.resetStreamLocked(b.streamID, http2.ErrCodeProtocol)
		c.mu.Unlock()
		return nil
	}
	return c.onHeaders(b)
}

// h2sMaxCanon bounds a connection's cache of canonical header keys.
const h2sMaxCanon = 256

// canonicalKey is textproto.CanonicalMIMEHeaderKey of a wire name, cached
// per connection: the same names arrive on every request, and
// canonicalizing one that is not in net/textproto's common table
// allocates. Read loop only.
func (c *h2sConn) canonicalKey(name string) string {
	if k, ok := c.canon[name]; ok {
		return k
	}
	k := textproto.CanonicalMIMEHeaderKey(name)
	if c.canon == nil {
		c.canon = make(map[string]string)
	}
	if len(c.canon) < h2sMaxCanon {
		c.canon[name] = k
	}
	return k
}

// parseH2Path is url.ParseRequestURI(path) filling u when the result is
// plain: an absolute path whose every byte url would leave unescaped in a
// path, with or without a query. Then Path is the path part as it is and
// RawPath is empty, exactly what ParseRequestURI returns, without
// allocating a URL. Anything else (escapes, "*", "//", a '#', other
// bytes) goes to url.ParseRequestURI.
func parseH2Path(path string, u *url.URL) (*url.URL, error) {
	p, query, hasQuery := strings.Cut(path, "?")
	if len(p) == 0 || p[0] != '/' || !plainURLPath(p) {
		return url.ParseRequestURI(path)
	}
	*u = url.URL{Path: p, RawQuery: query, ForceQuery: hasQuery && query == ""}
	return u, nil
}

// plainURLPath reports whether url.URL.EscapedPath would return p as it is
// for Path p: unreserved characters and the reserved ones url keeps in a
// path, no '%'.
func plainURLPath(p string) bool {
	for i := 0; i < len(p); i++ {
		if !urlPathPlain[p[i]] {
			return false
		}
	}
	return true
}

var urlPathPlain = func() (t [256]bool) {
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
	}
	for c := 'A'; c <= 'Z'; c++ {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for _, c := range "-_.~$&+,/:;=@" {
		t[c] = true
	}
	return t
}()
