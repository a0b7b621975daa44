package trickle

import (
	"io"
	"sync"
	"time"
)

// Body sends N bytes of B, one every Gap, then io.EOF. Close stops it
// early: a Read then returns io.ErrClosedPipe (an HTTP client closes the
// request body when the stream ends first).
type Body struct {
	n    int
	gap  time.Duration
	b    byte
	done chan struct{}
	once sync.Once
}

// New returns a body of n copies of b, one every gap.
func New(n int, gap time.Duration, b byte) *Body {
	return &Body{n: n, gap: gap, b: b, done: make(chan struct{})}
}

func (t *Body) Read(p []byte) (int, error) {
	if t.n == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	select {
	case <-t.done:
		return 0, io.ErrClosedPipe
	case <-time.After(t.gap):
	}
	t.n--
	p[0] = t.b
	return 1, nil
}

// Close stops the body; it is safe to call more than once.
func (t *Body) Close() error {
	t.once.Do(func() { close(t.done) })
	return nil
}
