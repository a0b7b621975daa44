package httpproxy

import (
	"errors"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Response header blocks are decoded here rather than by the Framer's
// ReadMetaHeaders: that builds a MetaHeadersFrame, a closure and its
// captured state, and a growing field slice for every block, about seven
// allocations per response head and again per trailer block. One decoder
// with one emit function and a reused field slice per connection leaves
// only the strings HPACK literals need.

var errH2cHeaderFlood = errors.New("http2: response header block too large")

// h2cBlock is the header block being read (HEADERS plus CONTINUATIONs).
// Read loop only.
type h2cBlock struct {
	dec      *hpack.Decoder
	streamID uint32
	end      bool // END_STREAM on the HEADERS frame
	fields   []hpack.HeaderField
	status   string
	size     int  // decoded header list size (RFC 9113 §6.5.2)
	raw      int  // encoded bytes of the block
	tooBig   bool // over h2cMaxHeaderList: fields dropped
	invalid  bool // a malformed field (RFC 9113 §8.2.1, §8.3)
	regular  bool // a regular field was seen: no pseudo field may follow
	nstatus  int
	emitFunc func(hpack.HeaderField)
}

func (b *h2cBlock) init() {
	b.dec = hpack.NewDecoder(4096, nil)
	b.dec.SetMaxStringLength(h2cMaxHeaderList)
	b.emitFunc = b.emit
	b.dec.SetEmitFunc(b.emitFunc)
}

func (b *h2cBlock) emit(hf hpack.HeaderField) {
	if b.tooBig {
		return
	}
	b.size += int(hf.Size())
	if b.size > h2cMaxHeaderList {
		b.tooBig = true
		b.fields = b.fields[:0]
		return
	}
	if len(hf.Name) > 0 && hf.Name[0] == ':' {
		if b.regular || hf.Name != ":status" {
			b.invalid = true
			return
		}
		b.nstatus++
		b.status = hf.Value
		return
	}
	b.regular = true
	if !validWireName(hf.Name) || !httpguts.ValidHeaderFieldValue(hf.Value) {
		b.invalid = true
		return
	}
	b.fields = append(b.fields, hf)
}

// validWireName: an HTTP/2 field name is a lower-case token.
func validWireName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if ch >= 'A' && ch <= 'Z' || !httpguts.IsTokenRune(rune(ch)) {
			return false
		}
	}
	return true
}

// start begins the block of a HEADERS frame.
func (b *h2cBlock) start(f *http2.HeadersFrame) {
	b.streamID = f.StreamID
	b.end = f.StreamEnded()
	b.fields = b.fields[:0]
	b.status = ""
	b.size, b.raw, b.nstatus = 0, 0, 0
	b.tooBig, b.invalid, b.regular = false, false, false
}

// write decodes one fragment; done reports the end of the block.
func (b *h2cBlock) write(frag []byte, last bool) (done bool, err error) {
	b.raw += len(frag)
	if b.raw > 2*h2cMaxHeaderList {
		return false, errH2cHeaderFlood
	}
	if _, err := b.dec.Write(frag); err != nil {
		return false, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if !last {
		return false, nil
	}
	if err := b.dec.Close(); err != nil {
		return false, http2.ConnectionError(http2.ErrCodeCompression)
	}
	return true, nil
}

// onHeadersFrame and onContinuation feed the block; a complete one goes
// to onHeaderBlock. The Framer already enforces that CONTINUATION frames
// follow their HEADERS without anything in between.
func (c *h2cliConn) onHeadersFrame(f *http2.HeadersFrame) error {
	c.blk.start(f)
	done, err := c.blk.write(f.HeaderBlockFragment(), f.HeadersEnded())
	if err != nil || !done {
		return err
	}
	return c.onHeaderBlock(&c.blk)
}

func (c *h2cliConn) onContinuation(f *http2.ContinuationFrame) error {
	done, err := c.blk.write(f.HeaderBlockFragment(), f.HeadersEnded())
	if err != nil || !done {
		return err
	}
	return c.onHeaderBlock(&c.blk)
}
