package httpproxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Flow-control and buffering sizes of the downstream HTTP/2 server.
const (
	// h2sWindow is the receive window we advertise per stream and for the
	// connection (x/net's server default, 1 MiB).
	h2sWindow = 1 << 20
	// h2sWindowUpdate is how much consumed credit we let accumulate
	// before returning it in one WINDOW_UPDATE.
	h2sWindowUpdate = h2sWindow / 4
	// h2sMaxOut bounds the frames waiting for the writer: stream writers
	// block above it.
	h2sMaxOut = 256 << 10
	// h2sPrefaceTimeout bounds how long a new connection may take to send
	// the client preface.
	h2sPrefaceTimeout = 10 * time.Second
	h2sMaxWindow      = 1<<31 - 1
)

type h2sConfig struct {
	maxStreams    uint32
	maxHeaderList uint32
	maxHeaders    int // header fields per request; 0 = no bound
	idleTimeout   time.Duration
	maxRequests   uint32 // max_requests_per_connection; 0 = unlimited
	// headersTimeout is request_headers_timeout: how long one header
	// block may take to arrive once its first byte has; 0 = unbounded.
	headersTimeout time.Duration
	// maxAge is max_connection_duration (0: none).
	maxAge time.Duration
}

// h2sConn is one downstream HTTP/2 connection. The goroutine calling serve
// reads frames; writeLoop writes; a goroutine per stream runs the handler.
// Everything shared is guarded by mu.
type h2sConn struct {
	h    *h2Handler
	conn net.Conn
	cfg  h2sConfig
	base context.Context

	remoteAddr string
	tls        *tls.ConnectionState

	br    *bufio.Reader
	fr    *http2.Framer     // read side: the serve goroutine only
	fb    *h2sFrameBudget   // bounds the bytes of one frame or header block (h2srvlimits.go)
	blk   h2sBlock          // header block being decoded (h2srvhdr.go)
	canon map[string]string // wire name -> canonical key (read loop)

	wg         sync.WaitGroup // stream workers
	work       chan h2sWork   // unbuffered: hands a stream to an idle worker
	wake       chan struct{}  // cap 1: frames are waiting in out
	writerDone chan struct{}

	mu          sync.Mutex
	cond        sync.Cond // send windows grew, out drained, or the conn died
	streams     map[uint32]*h2sStream
	maxClientID uint32 // highest stream id the client opened
	active      int    // streams whose handler runs
	out         []byte // encoded frames not yet written
	wfr         *http2.Framer
	henc        *hpack.Encoder
	hbuf        []byte
	lower       map[string]string // canonical header key -> wire name
	sendWindow  int64             // connection send window
	peerWindow  int64             // peer's SETTINGS_INITIAL_WINDOW_SIZE
	peerFrame   int               // peer's SETTINGS_MAX_FRAME_SIZE
	recvWindow  int64             // what the client may still send us
	recvUnacked int64             // consumed, not yet returned credit
	goAway      bool              // GOAWAY sent: no new streams
	closing     bool              // writer closes the conn once out is written
	dead        bool              // no more writes: streams fail fast
	idle        *time.Timer
	idleWorkers int
	// lifetime fires at max_connection_duration (h2srvlifetime.go).
	lifetime *time.Timer

	// Abuse accounting (h2srvlimits.go).
	ctrlQueued int         // control frames queued since the writer last took out
	flooded    atomic.Bool // ctrlQueued went over h2sMaxQueuedControl
	opened     int         // streams accepted
	premature  int         // of those, reset early by the client
	// lastRefused is the last stream refused for the concurrency limit;
	// refusedReset counts refused streams the client then reset.
	lastRefused  uint32
	refusedReset int
}

// h2sOut lets the write Framer and the HPACK encoder append to the
// connection's buffers (always under mu).
type h2sOut struct{ c *h2sConn }

func (o h2sOut) Write(p []byte) (int, error) { o.c.out = append(o.c.out, p...); return len(p), nil }

type h2sHdrOut struct{ c *h2sConn }

func (o h2sHdrOut) Write(p []byte) (int, error) {
	o.c.hbuf = append(o.c.hbuf, p...)
	return len(p), nil
}

func newH2sConn(conn net.Conn, h *h2Handler, cfg h2sConfig) *h2sConn {
	c := &h2sConn{
		h:          h,
		conn:       conn,
		cfg:        cfg,
		base:       context.Background(),
		remoteAddr: conn.RemoteAddr().String(),
		wake:       make(chan struct{}, 1),
		writerDone: make(chan struct{}),
		work:       make(chan h2sWork),
		streams:    make(map[uint32]*h2sStream),
		lower:      make(map[string]string),
		sendWindow: 65535,
		peerWindow: 65535,
		peerFrame:  16384,
		recvWindow: 65535,
	}
	if cs, ok := conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		st := cs.ConnectionState()
		c.tls = &st
	}
	c.cond.L = &c.mu
	c.br = bufio.NewReaderSize(conn, 16<<10)
	c.fr, c.fb = newH2sFramer(conn, c.br, cfg.maxHeaderList, cfg.headersTimeout)
	c.blk.init(cfg.maxHeaderList)
	if c.cfg.maxHeaders == 0 && h != nil && h.hcm != nil {
		c.cfg.maxHeaders = hcmMaxHeaders(h.hcm)
	}
	c.wfr = http2.NewFramer(h2sOut{c}, nil)
	c.henc = hpack.NewEncoder(h2sHdrOut{c})
	return c
}

// kick wakes the writer.
func (c *h2sConn) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// serve runs the connection: preface, SETTINGS, then the frame loop. It
// returns once the connection is closed and every stream goroutine ended.
func (c *h2sConn) serve() {
	go c.writeLoop()
	graceful := c.readLoop()
	c.shutdown(graceful)
}

// shutdown stops the connection: the writer flushes what it can (a final
// GOAWAY) and closes, streams are cancelled, and their goroutines awaited.
func (c *h2sConn) shutdown(graceful bool) {
	c.mu.Lock()
	c.closing = true
	c.mu.Unlock()
	c.kick()
	if graceful {
		_ = c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	} else {
		_ = c.conn.SetWriteDeadline(time.Now())
	}
	<-c.writerDone
	c.mu.Lock()
	c.dead = true
	if c.idle != nil {
		c.idle.Stop()
	}
	c.stopLifetimeLocked()
	var cancels []*h2sStream
	for _, s := range c.streams {
		s.resetLocked(errH2sConnClosed)
		cancels = append(cancels, s)
	}
	c.cond.Broadcast()
	c.mu.Unlock()
	for _, s := range cancels {
		s.cancelContexts()
	}
	close(c.work) // only the read loop sends, and it has returned
	c.wg.Wait()
}

var (
	errH2sConnClosed   = errors.New("http2: connection closed")
	errH2sStreamReset  = errors.New("http2: stream reset by client")
	errH2sStreamClosed = errors.New("http2: stream closed")
	errH2sBodyClosed   = errors.New("http2: request body closed")
)

// writeLoop writes the frames streams queued, one syscall per turn. It
// yields once before taking the buffer so that every stream runnable now
// adds its frames to the same write.
func (c *h2sConn) writeLoop() {
	defer close(c.writerDone)
	defer c.conn.Close()
	var buf []byte
	for range c.wake {
		yieldWriter()
		c.mu.Lock()
		buf, c.out = c.out, buf[:0]
		c.ctrlQueued = 0
		closing := c.closing
		c.cond.Broadcast()
		c.mu.Unlock()
		if len(buf) > 0 {
			if _, err := c.conn.Write(buf); err != nil {
				c.mu.Lock()
				c.dead = true
				c.cond.Broadcast()
				c.mu.Unlock()
				return
			}
		}
		if cap(buf) > 4*h2sMaxOut {
			buf = nil
		}
		if closing {
			c.mu.Lock()
			empty := len(c.out) == 0
			c.mu.Unlock()
			if empty {
				return
			}
			c.kick()
		}
	}
}

// drain starts a graceful close: GOAWAY now, close once no stream is open.
func (c *h2sConn) drain() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.goAwayLocked(http2.ErrCodeNo)
	if c.active == 0 {
		c.closing = true
	}
	c.kick()
}

// goAwayLocked sends GOAWAY once, naming the last stream we will process.
func (c *h2sConn) goAwayLocked(code http2.ErrCode) {
	if c.goAway || c.dead {
		return
	}
	c.goAway = true
	_ = c.wfr.WriteGoAway(c.maxClientID, code, nil)
}

// idleFired closes a connection that carried no stream for idle_timeout.
func (c *h2sConn) idleFired() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active == 0 && !c.closing {
		c.goAwayLocked(http2.ErrCodeNo)
		c.closing = true
		c.kick()
	}
}

// setIdleLocked arms or stops the idle timer as streams come and go.
func (c *h2sConn) setIdleLocked() {
	if c.cfg.idleTimeout <= 0 {
		return
	}
	if c.active > 0 {
		if c.idle != nil {
			c.idle.Stop()
		}
		return
	}
	if c.idle == nil {
		c.idle = time.AfterFunc(c.cfg.idleTimeout, c.idleFired)
		return
	}
	c.idle.Reset(c.cfg.idleTimeout)
}

// returnCreditLocked gives back n consumed bytes of connection window.
func (c *h2sConn) returnCreditLocked(n int64) {
	if n <= 0 || c.dead {
		return
	}
	c.recvUnacked += n
	if c.recvUnacked >= h2sWindowUpdate {
		_ = c.wfr.WriteWindowUpdate(0, uint32(c.recvUnacked))
		c.recvWindow += c.recvUnacked
		c.recvUnacked = 0
		c.kick()
	}
}

// yieldWriter lets the streams that are runnable now queue their frames
// before the writer takes the buffer: one write for many responses.
func yieldWriter() { runtime.Gosched() }

// h2sMaxIdleWorkers is how many finished stream goroutines a connection
// keeps for its next streams. A reused goroutine keeps its grown stack:
// profiles showed stack growth at about a tenth of the CPU of a stream
// served on a fresh goroutine.
const h2sMaxIdleWorkers = 32

// h2sWork is a stream handed to a worker.
type h2sWork struct {
	s *h2sStream
	h http.Handler
}

// dispatch runs a stream on an idle worker, or on a new one.
func (c *h2sConn) dispatch(w h2sWork) {
	select {
	case c.work <- w:
	default:
		c.wg.Add(1)
		go c.worker(w)
	}
}

func (c *h2sConn) worker(w h2sWork) {
	defer c.wg.Done()
	for {
		w.s.run(w.h)
		c.mu.Lock()
		if c.idleWorkers >= h2sMaxIdleWorkers || c.closing {
			c.mu.Unlock()
			return
		}
		c.idleWorkers++
		c.mu.Unlock()
		var ok bool
		w, ok = <-c.work
		c.mu.Lock()
		c.idleWorkers--
		c.mu.Unlock()
		if !ok {
			return
		}
	}
}
