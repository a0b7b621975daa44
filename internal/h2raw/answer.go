package h2raw

import (
	"errors"
	"net"
	"time"

	"golang.org/x/net/http2"
)

// Answer is what the server said about one stream, or about the
// connection.
type Answer struct {
	Status    string // :status of the response, if any
	RST       bool   // RST_STREAM on the stream
	GoAway    bool   // GOAWAY on the connection
	GoAwayErr http2.ErrCode
	Closed    bool // the connection ended
}

// Await reads frames until the server answers stream id (response headers
// or RST_STREAM), sends GOAWAY, or closes the connection. Frames of other
// streams are dropped on the way and the server's SETTINGS acknowledged.
// It fails the test when nothing of the kind arrives within timeout.
func (r *Conn) Await(id uint32, timeout time.Duration) Answer {
	_ = r.NetConn.SetReadDeadline(time.Now().Add(timeout))
	for {
		f, err := r.Framer.ReadFrame()
		if err != nil {
			if isTimeout(err) {
				r.tb.Fatalf("h2raw: stream %d: no answer within %v", id, timeout)
			}
			return Answer{Closed: true}
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				return Answer{Status: f.PseudoValue("status")}
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return Answer{RST: true}
			}
		case *http2.GoAwayFrame:
			return Answer{GoAway: true, GoAwayErr: f.ErrCode}
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = r.Framer.WriteSettingsAck()
				_ = r.Flush()
			}
		}
	}
}

// AwaitClose reads (and drops) frames until the connection ends. It
// returns the code of the last GOAWAY seen, if any, and whether the end
// came within timeout. It never fails the test, so it may run on a
// goroutine other than the test's.
func (r *Conn) AwaitClose(timeout time.Duration) (goAway *http2.ErrCode, closed bool) {
	_ = r.NetConn.SetReadDeadline(time.Now().Add(timeout))
	for {
		f, err := r.Framer.ReadFrame()
		if err != nil {
			return goAway, !isTimeout(err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			code := g.ErrCode
			goAway = &code
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
