package httpproxy

import (
	"errors"
	"io"
	"sync"
)

// errReplaySuperseded is what an abandoned attempt's body reader returns
// once a retry has taken over the request body.
var errReplaySuperseded = errors.New("request body taken over by a retry")

// errReplayLost: the body outgrew the replay buffer before a retry, so it
// cannot be sent again.
var errReplayLost = errors.New("request body too large to replay")

// replayBody tees a streaming request body into a bounded buffer while
// the first attempt sends it, so a retry can send it again: the retry
// replays the buffer, then goes on reading the live stream. The stream
// keeps flowing (bidirectional gRPC works), unlike buffering first. Past
// limit the buffer is dropped and the request is no longer retriable.
type replayBody struct {
	mu      sync.Mutex
	cond    sync.Cond
	src     io.Reader
	limit   int
	buf     []byte
	total   int  // bytes read from src so far
	dropped bool // buf no longer holds the whole prefix
	reading bool // one reader is inside src.Read
	err     error
	gen     int
}

func newReplayBody(src io.Reader, limit int) *replayBody {
	rb := &replayBody{src: src, limit: limit}
	rb.cond.L = &rb.mu
	return rb
}

// replayable reports whether a new attempt can still send the whole body.
func (rb *replayBody) replayable() bool {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	return !rb.dropped
}

// complete returns the whole body when it has been read and fits the
// buffer (mirrors send only complete bodies).
func (rb *replayBody) complete() ([]byte, bool) {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.dropped || rb.err != io.EOF {
		return nil, false
	}
	return rb.buf, true
}

// reader returns the body reader for a new attempt; earlier attempts'
// readers stop working.
func (rb *replayBody) reader() io.ReadCloser {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	rb.gen++
	rb.cond.Broadcast()
	return &replayReader{rb: rb, gen: rb.gen}
}

type replayReader struct {
	rb  *replayBody
	gen int
	pos int
}

func (r *replayReader) Close() error { return nil }

func (r *replayReader) Read(p []byte) (int, error) {
	rb := r.rb
	rb.mu.Lock()
	defer rb.mu.Unlock()
	for {
		if r.gen != rb.gen {
			return 0, errReplaySuperseded
		}
		if r.pos < rb.total {
			if rb.dropped {
				return 0, errReplayLost
			}
			n := copy(p, rb.buf[r.pos:])
			r.pos += n
			return n, nil
		}
		if rb.err != nil {
			return 0, rb.err
		}
		if rb.reading {
			rb.cond.Wait()
			continue
		}
		if len(p) == 0 {
			return 0, nil
		}
		rb.reading = true
		rb.mu.Unlock()
		n, err := rb.src.Read(p)
		rb.mu.Lock()
		rb.reading = false
		rb.cond.Broadcast()
		if n > 0 {
			if !rb.dropped {
				if len(rb.buf)+n > rb.limit {
					rb.dropped, rb.buf = true, nil
				} else {
					rb.buf = append(rb.buf, p[:n]...)
				}
			}
			rb.total += n
		}
		if err != nil {
			rb.err = err
		}
		if r.gen != rb.gen {
			// A retry took over while we were reading; what we read stays
			// in the buffer for it (unless dropped).
			return 0, errReplaySuperseded
		}
		r.pos += n
		if n > 0 {
			return n, nil
		}
		if err != nil {
			return 0, err
		}
	}
}
