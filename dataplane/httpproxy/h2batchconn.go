package httpproxy

import (
	"net"
	"runtime"
	"sync"
	"time"
)

// h2BatchMax bounds the bytes an h2BatchConn holds before Write blocks.
const h2BatchMax = 1 << 20

// h2BatchConn coalesces the writes of an upstream HTTP/2 connection. The
// x/net client flushes once or twice per request; with many concurrent
// streams on one connection that was a write syscall per frame batch per
// stream (a sixth of the proxy's CPU on the gRPC benchmark). Writes here
// only append to a buffer; one goroutine writes everything queued, after
// letting the other runnable streams add theirs. A write error is
// returned by the next Write and closes the connection, so the client's
// read loop fails too.
type h2BatchConn struct {
	net.Conn

	mu      sync.Mutex
	cond    sync.Cond // buffer drained or the writer stopped
	buf     []byte
	err     error
	closing bool
	wake    chan struct{}
	done    chan struct{}
	once    sync.Once
}

func newH2BatchConn(c net.Conn) *h2BatchConn {
	b := &h2BatchConn{Conn: c, wake: make(chan struct{}, 1), done: make(chan struct{})}
	b.cond.L = &b.mu
	go b.loop()
	return b
}

func (b *h2BatchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	for b.err == nil && len(b.buf) > h2BatchMax {
		b.cond.Wait()
	}
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	b.buf = append(b.buf, p...)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (b *h2BatchConn) loop() {
	defer close(b.done)
	var out []byte
	for range b.wake {
		runtime.Gosched()
		b.mu.Lock()
		out, b.buf = b.buf, out[:0]
		closing := b.closing
		b.cond.Broadcast()
		b.mu.Unlock()
		if len(out) > 0 {
			if _, err := b.Conn.Write(out); err != nil {
				b.fail(err)
				return
			}
		}
		if cap(out) > h2BatchMax {
			out = nil
		}
		if closing {
			b.mu.Lock()
			empty := len(b.buf) == 0
			b.mu.Unlock()
			if empty {
				return
			}
			select {
			case b.wake <- struct{}{}:
			default:
			}
		}
	}
}

func (b *h2BatchConn) fail(err error) {
	b.mu.Lock()
	if b.err == nil {
		b.err = err
	}
	b.cond.Broadcast()
	b.mu.Unlock()
	b.Conn.Close()
}

// Close writes what is queued (bounded by a short deadline) and closes.
func (b *h2BatchConn) Close() error {
	var err error
	b.once.Do(func() {
		b.mu.Lock()
		b.closing = true
		b.mu.Unlock()
		_ = b.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		select {
		case b.wake <- struct{}{}:
		default:
		}
		<-b.done
		b.fail(net.ErrClosed)
		err = nil
	})
	return err
}
