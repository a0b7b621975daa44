package hbone

import (
	"bufio"
	"net"
	"sync"
)

// bufConn is the TCP socket under a tunnel's TLS, batching its system
// calls. crypto/tls writes every record (16 KiB at most) with its own
// write(2) and reads about one record per read(2); a 256 KiB DATA frame
// would cost 16 of each. Reads go through a buffer, and writes are held
// from startBuffering on until the mux flushes at the end of each batch of
// frames (mux.unlockW), so one frame is one write(2).
type bufConn struct {
	net.Conn
	r *bufio.Reader

	mu        sync.Mutex
	buffering bool
	wbuf      *[]byte // from wbufPool while bytes are pending
}

const (
	readBufSize = 64 << 10
	// writeBufSize holds one maxSendFrame DATA frame with its TLS record
	// overhead (header, tag, content type per 16 KiB record).
	writeBufSize = maxSendFrame + maxSendFrame/16384*64 + 4096
)

var wbufPool = sync.Pool{New: func() any { b := make([]byte, 0, writeBufSize); return &b }}

func newBufConn(c net.Conn) *bufConn {
	return &bufConn{Conn: c, r: bufio.NewReaderSize(c, readBufSize)}
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// startBuffering holds writes from now on; before it (the TLS handshake)
// every write goes out at once.
func (c *bufConn) startBuffering() {
	c.mu.Lock()
	c.buffering = true
	c.mu.Unlock()
}

func (c *bufConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.buffering {
		return c.Conn.Write(p)
	}
	if c.wbuf == nil {
		c.wbuf = wbufPool.Get().(*[]byte)
	}
	if len(*c.wbuf)+len(p) > cap(*c.wbuf) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) > cap(*c.wbuf) {
			return c.Conn.Write(p)
		}
	}
	*c.wbuf = append(*c.wbuf, p...)
	return len(p), nil
}

// Flush writes what is pending and returns the buffer to the pool, so an
// idle connection holds none.
func (c *bufConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.flushLocked()
	if c.wbuf != nil {
		*c.wbuf = (*c.wbuf)[:0]
		wbufPool.Put(c.wbuf)
		c.wbuf = nil
	}
	return err
}

func (c *bufConn) flushLocked() error {
	if c.wbuf == nil || len(*c.wbuf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(*c.wbuf)
	*c.wbuf = (*c.wbuf)[:0]
	return err
}
