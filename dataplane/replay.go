package dataplane

import (
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// replayConn is a TCP connection whose first bytes were consumed by the
// listener filters; Read returns them again before reading the socket.
//
// It embeds the *net.TCPConn so CloseWrite, CloseRead, SyscallConn and
// deadlines reach the socket, and it implements io.WriterTo and
// io.ReaderFrom so that io.Copy between it and another *net.TCPConn still
// takes the kernel's splice path once the replay buffer is empty.
type replayConn struct {
	*net.TCPConn
	buf []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.TCPConn.Read(p)
}

// WriteTo writes the replay buffer to w, then hands the socket itself to
// io.Copy, which lets w (a *net.TCPConn) splice from it.
func (c *replayConn) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if len(c.buf) > 0 {
		m, err := w.Write(c.buf)
		n += int64(m)
		c.buf = c.buf[m:]
		if err != nil {
			return n, err
		}
	}
	m, err := io.Copy(w, c.TCPConn)
	return n + m, err
}

// ReadFrom writes into the socket; the replay buffer only concerns reads.
func (c *replayConn) ReadFrom(r io.Reader) (int64, error) { return c.TCPConn.ReadFrom(r) }

// peekAfter reads from conn until inspect can decide, the peer stops sending
// (EOF), maxPeek bytes are buffered, or timeout passes. timedOut reports the
// last case; err is set only for connections that must be closed.
// pre holds the connection's first bytes when someone else already read
// them (HandleAs: the bytes after a CONNECT head); buf starts with them.
func peekAfter(conn *net.TCPConn, pre []byte, timeout time.Duration) (buf []byte, res inspection, timedOut bool, err error) {
	if timeout > 0 { // negative: listener_filters_timeout disabled
		if err := conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
			return nil, inspection{}, false, err
		}
	}
	buf = append(make([]byte, 0, max(2048, len(pre))), pre...)
	for {
		var more bool
		res, more, err = inspect(buf)
		if err != nil {
			return buf, res, false, err
		}
		if !more || len(buf) >= maxPeek {
			break
		}
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, min(cap(buf), maxPeek-len(buf)))...)[:len(buf)]
		}
		n, rerr := conn.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if rerr != nil {
			if errors.Is(rerr, os.ErrDeadlineExceeded) {
				timedOut = true
			} else if !errors.Is(rerr, io.EOF) {
				return buf, res, false, rerr
			}
			res, _, err = inspect(buf)
			if err != nil {
				return buf, res, false, err
			}
			break
		}
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return buf, res, false, err
	}
	if res.transport == "" {
		res.transport = transportRaw
	}
	return buf, res, timedOut, nil
}
