package httpproxy

import (
	"time"

	"golang.org/x/net/http2"
)

// max_connection_duration on downstream HTTP/2 connections. When the
// connection has lived that long it is drained like on a listener drain:
// GOAWAY(NO_ERROR) naming the last stream we serve, and the connection
// closes once its open streams are done. As in Envoy, open streams are
// not cut: a long-lived stream (a gRPC watch) keeps its connection until
// it ends, and max_stream_duration is the knob that bounds streams.
// Envoy's drain_timeout is the time between its first GOAWAY (maximum
// stream id) and the final one; meshlet sends the final one at once, so
// drain_timeout has nothing left to time.

// armLifetimeLocked starts the max_connection_duration clock; the read
// loop calls it once SETTINGS are queued.
func (c *h2sConn) armLifetimeLocked() {
	if c.cfg.maxAge > 0 && c.lifetime == nil && !c.dead {
		c.lifetime = time.AfterFunc(c.cfg.maxAge, c.expire)
	}
}

// stopLifetimeLocked stops the timer once the connection is dead; a
// callback already running finds c.dead and does nothing.
func (c *h2sConn) stopLifetimeLocked() {
	if c.lifetime != nil {
		c.lifetime.Stop()
	}
}

// expire runs at max_connection_duration: GOAWAY, and close now when no
// stream is open (else the last stream's end closes it).
func (c *h2sConn) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead || c.closing {
		return
	}
	c.goAwayLocked(http2.ErrCodeNo)
	if c.active == 0 {
		c.closing = true
	}
	c.kick()
}
