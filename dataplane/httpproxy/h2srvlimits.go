package httpproxy

import (
	"bufio"
	"errors"
	"net"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshlet/meshlet/state"
)

// Abuse limits of the downstream HTTP/2 server. Each closes the
// connection with GOAWAY(ENHANCE_YOUR_CALM): the peer is not a client that
// a stream reset would slow down.
const (
	// h2sMaxFrame is the largest frame we accept: we never advertise a
	// larger SETTINGS_MAX_FRAME_SIZE, so the RFC 9113 default applies, and
	// the framer must not allocate for the 16 MiB a frame header can claim.
	h2sMaxFrame = 16384

	// h2sMaxQueuedControl bounds the control frames (PING and SETTINGS
	// acks, RST_STREAM, WINDOW_UPDATE) we queued in answer to the client
	// while the writer could not flush them: a client that sends PINGs
	// but never reads would otherwise grow the write buffer without end.
	// x/net's server uses the same bound.
	h2sMaxQueuedControl = 10000

	// Premature-reset budget (Envoy's rule against rapid reset,
	// CVE-2023-44487): a stream is reset early when the client resets it
	// within h2sPrematureAge and before we sent response headers. Once
	// early resets are at least half of max(streams opened,
	// h2sPrematureMinStreams), the connection is closed.
	h2sPrematureMinStreams = 100
	h2sPrematureAge        = time.Second
)

var (
	// errH2sFlood: the client made us queue too many control frames.
	errH2sFlood = errors.New("http2: control frame flood")
	// errH2sRapidReset: the premature-reset budget is spent.
	errH2sRapidReset = errors.New("http2: too many streams reset early")
	// errH2sHeaderFlood: one header block (HEADERS and its CONTINUATIONs)
	// took more than twice the header list limit off the wire.
	errH2sHeaderFlood = errors.New("http2: header block too large")
)

// h2sFrameBudget sits between the framer and the buffered connection and
// bounds the bytes one frame, or one whole header block (HEADERS plus every
// CONTINUATION: the read loop does not reset it inside a block), may
// consume. Empty CONTINUATIONs, or ones that decode to nothing (HPACK
// table size updates), would otherwise pass without bound: the budget
// closes the connection before twice the header list limit was read.
//
// It also bounds the time a header block may take (HTTP/2 slowloris):
// with request_headers_timeout set, the first byte of a frame arms a read
// deadline, which stays armed until the whole block has been read when
// the frame is HEADERS (the next reset, after END_HEADERS), and is dropped
// once the 9-byte frame header shows any other type (bodies and idle
// streams are not bounded by it).
type h2sFrameBudget struct {
	r    *bufio.Reader
	max  int
	left int

	conn    net.Conn
	timeout time.Duration // request_headers_timeout; 0: no deadline
	hdr     [9]byte       // the frame header seen so far
	nhdr    int
	armed   bool
}

func (b *h2sFrameBudget) reset() {
	b.left = b.max
	b.nhdr = 0
	if b.armed {
		b.armed = false
		_ = b.conn.SetReadDeadline(time.Time{})
	}
}

func (b *h2sFrameBudget) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errH2sHeaderFlood
	}
	if len(p) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= n
	if b.timeout > 0 && n > 0 && b.nhdr < len(b.hdr) {
		b.watchHeader(p[:n])
	}
	return n, err
}

// watchHeader follows the first frame header of a ReadFrame call.
func (b *h2sFrameBudget) watchHeader(p []byte) {
	if b.nhdr == 0 {
		b.armed = true
		_ = b.conn.SetReadDeadline(time.Now().Add(b.timeout))
	}
	b.nhdr += copy(b.hdr[b.nhdr:], p)
	if b.nhdr == len(b.hdr) && http2.FrameType(b.hdr[3]) != http2.FrameHeaders {
		b.armed = false
		_ = b.conn.SetReadDeadline(time.Time{})
	}
}

// frameBudget is the per-ReadFrame byte budget for a header list limit:
// twice the limit, but never less than one full frame of any kind.
func frameBudget(maxHeaderList uint32) int {
	return max(2*int(maxHeaderList), 9+h2sMaxFrame)
}

// newH2sFramer builds the read framer over br (reading conn) with the
// budget reader; headersTimeout bounds each header block (0: unbounded).
func newH2sFramer(conn net.Conn, br *bufio.Reader, maxHeaderList uint32, headersTimeout time.Duration) (*http2.Framer, *h2sFrameBudget) {
	fb := &h2sFrameBudget{r: br, max: frameBudget(maxHeaderList), conn: conn, timeout: headersTimeout}
	fb.reset()
	fr := http2.NewFramer(nil, fb)
	// Header blocks are decoded by h2sBlock (h2srvhdr.go), frame by frame.
	fr.MaxHeaderListSize = maxHeaderList
	fr.SetMaxReadFrameSize(h2sMaxFrame)
	fr.SetReuseFrames()
	return fr, fb
}

// controlQueuedLocked counts a control frame queued by the read side; the
// writer zeroes the count whenever it takes the buffer.
func (c *h2sConn) controlQueuedLocked() {
	c.ctrlQueued++
	if c.ctrlQueued > h2sMaxQueuedControl {
		c.flooded.Store(true)
	}
}

// clientResetLocked accounts a client RST_STREAM on a stream we serve and
// reports whether the premature-reset budget is spent.
func (c *h2sConn) clientResetLocked(s *h2sStream) bool {
	if s.w.sentHeader || time.Since(s.opened) >= h2sPrematureAge {
		return false
	}
	c.premature++
	return c.prematureSpentLocked()
}

// refusedResetLocked accounts a client RST_STREAM on the stream we just
// refused for the concurrency limit, and reports whether the
// premature-reset budget is spent. Our limit counts streams whose handler
// still unwinds after the client reset them; to the client those are
// closed, so a HEADERS+RST_STREAM flood runs into refusals as soon as the
// read loop outpaces the handlers. Such a stream was opened and reset
// early all the same: without this the flood would spend no budget.
func (c *h2sConn) refusedResetLocked() bool {
	c.lastRefused = 0
	c.refusedReset++
	c.premature++
	return c.prematureSpentLocked()
}

// prematureSpentLocked: early resets are at least half of the streams the
// client opened (accepted, or refused and reset), counting at least
// h2sPrematureMinStreams.
func (c *h2sConn) prematureSpentLocked() bool {
	return c.premature*2 >= max(c.opened+c.refusedReset, h2sPrematureMinStreams)
}

// validMethod reports whether m is an RFC 9110 token.
func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		if !tchar[m[i]] {
			return false
		}
	}
	return true
}

// validH2Path reports whether a :path can go into an HTTP/1.1 request
// line unchanged: no whitespace, controls or DEL, which would split or
// end the request line upstream.
func validH2Path(p string) bool {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= 0x20 || c >= 0x7f {
			return false
		}
	}
	return true
}

// validAuthority reports whether a is a plausible host[:port]: RFC 3986
// reg-name, IP literal and port characters only (Envoy's
// authorityIsValid), so nothing that splits a Host line upstream.
func validAuthority(a string) bool {
	for i := 0; i < len(a); i++ {
		c := a[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '.' || c == '_' || c == '~' || c == ':' || c == '[' || c == ']':
		case c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' || c == ')' ||
			c == '*' || c == '+' || c == ',' || c == ';' || c == '=' || c == '%' || c == '@':
		default:
			return false
		}
	}
	return true
}

// validContentLength reports whether v is a bare decimal (no sign, no
// spaces), as RFC 9110 §8.6 requires; strconv accepts "+5".
func validContentLength(v string) bool {
	if v == "" || len(v) > 18 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return false
		}
	}
	return true
}

// hcmMaxHeaders is the HCM's max_headers_count with Envoy's default.
func hcmMaxHeaders(hcm *state.HTTPConnectionManager) int {
	if hcm.MaxHeadersCount > 0 {
		return int(hcm.MaxHeadersCount)
	}
	return state.DefaultMaxHeadersCount
}
