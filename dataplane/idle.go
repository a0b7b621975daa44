package dataplane

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// idleWatch closes a proxied connection pair after timeout without data in
// either direction. It runs on a timer, not a goroutine, and never touches
// the copy path of plain TCP sockets: for those the kernel says when data
// last arrived. Sides that cannot splice anyway (TLS) count bytes read in an
// atomic, which the check compares with what it saw last time.
type idleWatch struct {
	timeout time.Duration
	onIdle  func()
	sides   [2]idleSide
	coarse  bool // some side is counted: check at least every timeout/4

	mu    sync.Mutex
	timer *time.Timer
	done  bool
}

type idleSide struct {
	kernel *kernelIdle // nil for counted sides
	n      atomic.Int64
	seen   int64
	at     time.Time
}

// countingReader counts bytes read from a connection for idleWatch.
type countingReader struct {
	net.Conn
	n *atomic.Int64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	if n > 0 {
		r.n.Add(int64(n))
	}
	return n, err
}

// watch sets up side i for conn and returns the reader the copy loop must
// read that side from.
func (w *idleWatch) watch(i int, conn net.Conn, now time.Time) net.Conn {
	s := &w.sides[i]
	s.at = now
	if tc := tcpOf(conn); tc != nil {
		if k, ok := newKernelIdle(tc); ok {
			s.kernel = k
			return conn
		}
	}
	w.coarse = true
	return &countingReader{Conn: conn, n: &s.n}
}

func (w *idleWatch) start() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.timer = time.AfterFunc(w.interval(w.timeout), w.check)
}

func (w *idleWatch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	if w.timer != nil {
		w.timer.Stop()
	}
}

func (w *idleWatch) interval(d time.Duration) time.Duration {
	if w.coarse {
		d = min(d, w.timeout/4)
	}
	return max(d, time.Millisecond)
}

func (w *idleWatch) check() {
	now := time.Now()
	idle := w.timeout
	for i := range w.sides {
		s := &w.sides[i]
		var d time.Duration
		if s.kernel != nil {
			kd, ok := s.kernel.idleFor()
			if !ok {
				continue // socket already closed: the copy loop is ending
			}
			d = kd
		} else {
			if n := s.n.Load(); n != s.seen {
				s.seen, s.at = n, now
			}
			d = now.Sub(s.at)
		}
		idle = min(idle, d)
	}
	w.mu.Lock()
	if w.done {
		w.mu.Unlock()
		return
	}
	if idle >= w.timeout {
		w.done = true
		w.mu.Unlock()
		w.onIdle()
		return
	}
	w.timer.Reset(w.interval(w.timeout - idle))
	w.mu.Unlock()
}
