package h2raw

import (
	"bufio"
	"bytes"
	"net"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// writeTimeout bounds Flush: a server that stops reading must fail the
// write, not hang the test.
const writeTimeout = 10 * time.Second

// Conn is one raw HTTP/2 client connection. Frames written through Framer
// (or bytes written to Writer, for hand-made frames) are buffered until
// Flush. It is not safe for concurrent use.
type Conn struct {
	// NetConn is the TCP connection, for deadlines and closing.
	NetConn net.Conn
	// Writer buffers everything written to the connection; Framer writes
	// into it.
	Writer *bufio.Writer
	// Framer writes frames into Writer and reads frames (with header
	// blocks decoded into MetaHeadersFrames) from NetConn.
	Framer *http2.Framer

	tb   testing.TB
	hbuf bytes.Buffer
	enc  *hpack.Encoder
}

// Dial connects to addr and sends the client preface and an empty SETTINGS
// frame. readBuf, when above zero, shrinks the socket receive buffer: a
// client that never reads then stalls the server's writes sooner. The
// connection is closed in tb.Cleanup.
func Dial(tb testing.TB, addr string, readBuf int) *Conn {
	tb.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		tb.Fatalf("h2raw: dial %s: %v", addr, err)
	}
	if readBuf > 0 {
		_ = c.(*net.TCPConn).SetReadBuffer(readBuf)
	}
	tb.Cleanup(func() { c.Close() })
	r := &Conn{tb: tb, NetConn: c, Writer: bufio.NewWriterSize(c, 64<<10)}
	r.Framer = http2.NewFramer(r.Writer, c)
	r.Framer.ReadMetaHeaders = hpack.NewDecoder(65536, nil)
	r.Framer.MaxHeaderListSize = 1 << 20
	r.enc = hpack.NewEncoder(&r.hbuf)
	_, _ = r.Writer.WriteString(http2.ClientPreface)
	_ = r.Framer.WriteSettings()
	if err := r.Flush(); err != nil {
		tb.Fatalf("h2raw: preface to %s: %v", addr, err)
	}
	return r
}

// Flush sends what is buffered, within writeTimeout.
func (r *Conn) Flush() error {
	_ = r.NetConn.SetWriteDeadline(time.Now().Add(writeTimeout))
	return r.Writer.Flush()
}

// Block HPACK-encodes name/value pairs with the connection's encoder (so
// blocks must be sent in the order they were made). Names and values are
// written as given: the encoder does not validate them, so tests can send
// upper case, CR, LF or NUL.
func (r *Conn) Block(kv ...string) []byte {
	r.hbuf.Reset()
	for i := 0; i+1 < len(kv); i += 2 {
		_ = r.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	return append([]byte(nil), r.hbuf.Bytes()...)
}

// Headers queues one complete HEADERS frame (END_HEADERS set) for stream
// id, with END_STREAM when end. It does not flush.
func (r *Conn) Headers(id uint32, end bool, kv ...string) {
	_ = r.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.Block(kv...), EndStream: end, EndHeaders: true})
}

// GET is the pseudo-header fields of a GET for path on example.com, as
// name/value pairs for Block or Headers.
func GET(path string) []string {
	return []string{":method", "GET", ":scheme", "http", ":authority", "example.com", ":path", path}
}
