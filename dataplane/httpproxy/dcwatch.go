package httpproxy

import (
	"net"
	"sync/atomic"
	"time"
)

// While an HTTP/1.1 session waits for an upstream response nothing reads
// the downstream connection, so a client that gives up is only noticed
// when the response is written. Envoy resets the upstream request at once
// (flag DC). A dcWatch gives the same: a goroutine parked on the runtime's
// netpoller until the downstream socket turns readable, which a FIN or RST
// does; it then peeks (consuming nothing) and wakes the session.
//
// Starting one costs a goroutine and two deadline updates, so sessions
// start it only once a response has taken dcGrace: fast responses, the
// common case, pay nothing and allocate nothing.

// dcGrace is how long a session waits for a response head before it
// starts watching the downstream connection.
const dcGrace = 5 * time.Millisecond

// dcWatch watches one downstream connection until stop.
type dcWatch struct {
	done chan struct{}
	// gone: the client closed or reset the connection.
	gone atomic.Bool
	// data: bytes arrived (a pipelined request, a TLS record): the close
	// can no longer be seen without reading them, so the watch ended.
	data atomic.Bool
}

// ended reports whether the watcher has something to say.
func (w *dcWatch) ended() bool { return w.gone.Load() || w.data.Load() }

// startDCWatch starts watching conn; poke runs on the watcher's goroutine
// once the client left (gone) or bytes arrived (the waiting session uses
// it to wake up). It returns nil when conn's socket cannot be watched; the
// caller then polls.
func startDCWatch(conn net.Conn, poke func(gone bool)) *dcWatch {
	w := &dcWatch{done: make(chan struct{})}
	// Body reads may have left a deadline on the connection.
	_ = conn.SetReadDeadline(time.Time{})
	if !watchClosed(conn, w, poke) {
		return nil
	}
	return w
}

// stop ends the watch and waits for the watcher to leave (after which
// poke no longer runs); it reports whether the client left.
func (w *dcWatch) stop(conn net.Conn) bool {
	_ = conn.SetReadDeadline(time.Unix(1, 0))
	<-w.done
	_ = conn.SetReadDeadline(time.Time{})
	return w.gone.Load()
}
