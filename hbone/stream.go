package hbone

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/net/http2"
)

// stream is one CONNECT stream, one tunneled TCP connection, as a net.Conn
// with TCP's half-close: CloseWrite sends END_STREAM while reads go on, and
// the peer's END_STREAM reads as io.EOF while writes go on.
type stream struct {
	m  *mux
	id uint32

	// Guarded by m.mu.
	rbuf       []byte // received, unread bytes are rbuf[roff:]
	roff       int
	filling    bool // the read loop is writing past len(rbuf)
	recvWindow int32
	unacked    int32
	recvEnd    bool  // peer sent END_STREAM
	rerr       error // reset or connection failure
	sendWindow int64
	sentEnd    bool
	closed     bool
	rcond      *sync.Cond
	wcond      *sync.Cond
	rdl, wdl   time.Time
	rtimer     *time.Timer
	wtimer     *time.Timer
	gotResp    bool
	status     int

	respc chan struct{} // client: closed on the response or failure
	dead  chan struct{} // closed on reset or connection failure
	local net.Addr
	peer  net.Addr
}

// errWriteClosed is returned by Write after CloseWrite.
var errWriteClosed = errors.New("hbone: write after CloseWrite")

// failLocked ends both directions with err.
func (s *stream) failLocked(err error) {
	if s.rerr != nil {
		return
	}
	s.rerr = err
	s.rcond.Broadcast()
	s.wcond.Broadcast()
	if !s.gotResp {
		s.gotResp = true
		close(s.respc)
	}
	close(s.dead)
}

// reserveLocked makes room for n more bytes and returns that space; the
// read loop fills it without the lock while Read may consume rbuf[roff:].
func (s *stream) reserveLocked(n int) []byte {
	if s.roff == len(s.rbuf) {
		s.rbuf, s.roff = s.rbuf[:0], 0
	}
	if cap(s.rbuf)-len(s.rbuf) < n {
		unread := len(s.rbuf) - s.roff
		if s.roff > 0 && cap(s.rbuf)-unread >= n {
			copy(s.rbuf, s.rbuf[s.roff:])
		} else {
			nb := make([]byte, unread, max(2*cap(s.rbuf), unread+n, 64<<10))
			copy(nb, s.rbuf[s.roff:])
			s.rbuf = nb
		}
		s.rbuf, s.roff = s.rbuf[:unread], 0
	}
	s.filling = true
	return s.rbuf[len(s.rbuf) : len(s.rbuf)+n]
}

func (s *stream) Read(p []byte) (int, error) {
	m := s.m
	m.mu.Lock()
	for {
		if s.roff < len(s.rbuf) {
			n := copy(p, s.rbuf[s.roff:])
			s.roff += n
			if s.roff == len(s.rbuf) && !s.filling {
				s.rbuf, s.roff = s.rbuf[:0], 0
			}
			var sInc, cInc uint32
			if !s.recvEnd && s.rerr == nil {
				s.unacked += int32(n)
				if s.unacked >= streamUpdateAt {
					sInc = uint32(s.unacked)
					s.recvWindow += s.unacked
					s.unacked = 0
				}
			}
			m.connUnacked += int32(n)
			if m.connUnacked >= connUpdateAt {
				cInc = uint32(m.connUnacked)
				m.connUnacked = 0
			}
			dead := m.err != nil
			m.mu.Unlock()
			if (sInc > 0 || cInc > 0) && !dead {
				m.windowUpdate(s.id, sInc, cInc)
			}
			return n, nil
		}
		switch {
		case s.closed:
			m.mu.Unlock()
			return 0, net.ErrClosed
		case s.rerr != nil:
			err := s.rerr
			m.mu.Unlock()
			return 0, err
		case s.recvEnd:
			m.mu.Unlock()
			return 0, io.EOF
		case !s.rdl.IsZero() && !time.Now().Before(s.rdl):
			m.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		s.rcond.Wait()
	}
}

// windowUpdate returns consumed window to the peer. It runs on the
// reader's goroutine, never the read loop's.
func (m *mux) windowUpdate(id, sInc, cInc uint32) {
	m.wmu.Lock()
	var err error
	if sInc > 0 {
		err = m.fr.WriteWindowUpdate(id, sInc)
	}
	if cInc > 0 && err == nil {
		err = m.fr.WriteWindowUpdate(0, cInc)
	}
	m.unlockW(&err)
	if err != nil {
		m.close(err)
	}
}

func (s *stream) Write(p []byte) (int, error) {
	m := s.m
	var written int
	for len(p) > 0 {
		m.mu.Lock()
		for {
			var err error
			switch {
			case s.closed:
				err = net.ErrClosed
			case s.rerr != nil:
				err = s.rerr
			case s.sentEnd:
				err = errWriteClosed
			case !s.wdl.IsZero() && !time.Now().Before(s.wdl):
				err = os.ErrDeadlineExceeded
			}
			if err != nil {
				m.mu.Unlock()
				return written, err
			}
			if s.sendWindow > 0 && m.sendWindow > 0 {
				break
			}
			if s.sendWindow <= 0 {
				s.wcond.Wait()
			} else {
				m.connWin.Wait()
			}
		}
		n := int64(min(len(p), maxSendFrame, int(m.peerMaxFrame)))
		n = min(n, s.sendWindow, m.sendWindow)
		s.sendWindow -= n
		m.sendWindow -= n
		m.mu.Unlock()

		m.wmu.Lock()
		err := m.writeData(s.id, p[:n])
		m.unlockW(&err)
		if err != nil {
			m.close(err)
			return written, err
		}
		written += int(n)
		p = p[n:]
	}
	return written, nil
}

// CloseWrite sends END_STREAM: the far end's destination sees FIN while
// its answer keeps flowing back.
func (s *stream) CloseWrite() error {
	m := s.m
	m.mu.Lock()
	if s.closed || s.rerr != nil {
		err := s.rerr
		m.mu.Unlock()
		if err == nil {
			err = net.ErrClosed
		}
		return err
	}
	if s.sentEnd {
		m.mu.Unlock()
		return nil
	}
	s.sentEnd = true
	m.mu.Unlock()
	return s.finish()
}

// finish writes the empty END_STREAM frame and forgets the stream when
// the peer has ended its side too.
func (s *stream) finish() error {
	m := s.m
	m.wmu.Lock()
	err := m.fr.WriteData(s.id, true, nil)
	m.unlockW(&err)
	if err != nil {
		m.close(err)
		return err
	}
	m.mu.Lock()
	if s.recvEnd {
		m.removeLocked(s)
	}
	m.mu.Unlock()
	return nil
}

// Close ends the stream like closing a socket: if the peer already ended
// its side, a clean END_STREAM; otherwise a reset (CANCEL), which the far
// end turns into closing its destination.
func (s *stream) Close() error {
	m := s.m
	m.mu.Lock()
	if s.closed {
		m.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.rtimer != nil {
		s.rtimer.Stop()
	}
	if s.wtimer != nil {
		s.wtimer.Stop()
	}
	s.rcond.Broadcast()
	s.wcond.Broadcast()
	m.connWin.Broadcast()
	// Unread bytes still hold connection window; give it back.
	var cInc uint32
	if unread := int32(len(s.rbuf) - s.roff); unread > 0 {
		m.connUnacked += unread
		if m.connUnacked >= connUpdateAt {
			cInc = uint32(m.connUnacked)
			m.connUnacked = 0
		}
	}
	if !s.filling {
		s.rbuf, s.roff = nil, 0
	} else {
		s.roff = len(s.rbuf)
	}
	live := m.streams[s.id] == s
	graceful := live && s.recvEnd && !s.sentEnd
	if live && !graceful {
		m.removeLocked(s)
	}
	if graceful {
		s.sentEnd = true
	}
	dead := m.err != nil
	m.mu.Unlock()
	if cInc > 0 && !dead {
		m.windowUpdate(0, 0, cInc)
	}
	switch {
	case !live || dead:
	case graceful:
		return s.finish()
	default:
		m.wmu.Lock()
		err := m.fr.WriteRSTStream(s.id, http2.ErrCodeCancel)
		m.unlockW(&err)
		if err != nil {
			m.close(err)
		}
	}
	return nil
}

func (s *stream) LocalAddr() net.Addr  { return s.local }
func (s *stream) RemoteAddr() net.Addr { return s.peer }

func (s *stream) SetDeadline(t time.Time) error {
	_ = s.SetReadDeadline(t)
	return s.SetWriteDeadline(t)
}

func (s *stream) SetReadDeadline(t time.Time) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.rdl = t
	s.rtimer = s.armLocked(s.rtimer, t, s.rcond)
	return nil
}

func (s *stream) SetWriteDeadline(t time.Time) error {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.wdl = t
	s.wtimer = s.armLocked(s.wtimer, t, s.wcond)
	return nil
}

// armLocked (re)starts a timer that wakes waiters on c at t; waiters check
// the deadline themselves.
func (s *stream) armLocked(tm *time.Timer, t time.Time, c *sync.Cond) *time.Timer {
	if tm != nil {
		tm.Stop()
	}
	if t.IsZero() {
		return tm
	}
	wake := func() {
		s.m.mu.Lock()
		c.Broadcast()
		s.m.connWin.Broadcast()
		s.m.mu.Unlock()
	}
	d := time.Until(t)
	if d <= 0 {
		c.Broadcast()
		s.m.connWin.Broadcast()
		return tm
	}
	if tm == nil {
		return time.AfterFunc(d, wake)
	}
	tm.Reset(d)
	return tm
}
