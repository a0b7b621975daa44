package h2raw

import (
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func listen(t *testing.T) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return lis
}

// h2Server is net/http's server speaking prior-knowledge HTTP/2 only,
// answering every request with 200.
func h2Server(t *testing.T) string {
	lis := listen(t)
	protos := new(http.Protocols)
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{
		Protocols: protos,
		Handler:   http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}),
		// The connection errors the tests provoke are expected.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return lis.Addr().String()
}

// silent accepts one connection and reads it, never writing, until the
// client closes it.
func silent(t *testing.T) string {
	lis := listen(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := lis.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(io.Discard, c)
	}()
	// Registered before Dial's cleanup, so it runs after the client closed.
	t.Cleanup(func() { lis.Close(); <-done })
	return lis.Addr().String()
}

// What a real HTTP/2 server's answers look like through Await and
// AwaitClose.
func TestAwait(t *testing.T) {
	addr := h2Server(t)
	tests := []struct {
		name string
		send func(r *Conn)
		want Answer
	}{
		{"GET", func(r *Conn) { r.Headers(1, true, GET("/a")...) }, Answer{Status: "200"}},
		{"invalid field name resets the stream", func(r *Conn) {
			r.Headers(1, true, append(GET("/a"), "X-Upper", "v")...)
		}, Answer{RST: true}},
		{"HPACK garbage ends the connection", func(r *Conn) {
			_ = r.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff, 0xff}, EndStream: true, EndHeaders: true})
		}, Answer{GoAway: true, GoAwayErr: http2.ErrCodeCompression}},
		{"header block split: hand-made HEADERS frame, then CONTINUATION", func(r *Conn) {
			b := r.Block(GET("/split")...)
			// HEADERS frame header (length, type, flags END_STREAM,
			// stream 1) written by hand, then the rest in a CONTINUATION.
			_, _ = r.Writer.Write([]byte{0, 0, 3, byte(http2.FrameHeaders), byte(http2.FlagHeadersEndStream), 0, 0, 0, 1})
			_, _ = r.Writer.Write(b[:3])
			_ = r.Framer.WriteContinuation(1, true, b[3:])
		}, Answer{Status: "200"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Dial(t, addr, 0)
			tc.send(r)
			if err := r.Flush(); err != nil {
				t.Fatal(err)
			}
			if got := r.Await(1, 5*time.Second); got != tc.want {
				t.Fatalf("answer %+v, want %+v", got, tc.want)
			}
		})
	}
}

// The connection serves more than one stream, and AwaitClose reports the
// GOAWAY before the end.
func TestAwaitCloseAfterGoAway(t *testing.T) {
	r := Dial(t, h2Server(t), 0)
	// One at a time: Await drops the frames of other streams.
	for _, id := range []uint32{1, 3} {
		r.Headers(id, true, GET("/")...)
		if err := r.Flush(); err != nil {
			t.Fatal(err)
		}
		if a := r.Await(id, 5*time.Second); a.Status != "200" {
			t.Fatalf("stream %d: %+v", id, a)
		}
	}
	// A DATA frame on stream 0 is a connection error (RFC 9113 §6.1). The
	// Framer refuses to write it, so it goes out by hand.
	_, _ = r.Writer.Write([]byte{0, 0, 1, byte(http2.FrameData), 0, 0, 0, 0, 0, 'x'})
	_ = r.Flush()
	code, closed := r.AwaitClose(5 * time.Second)
	if !closed || code == nil || *code != http2.ErrCodeProtocol {
		t.Fatalf("closed %v, GOAWAY %v; want closed with PROTOCOL_ERROR", closed, code)
	}
}

// fatalTB records Fatalf and ends the goroutine as testing does.
type fatalTB struct {
	testing.TB
	msg chan string
}

func (f fatalTB) Fatalf(format string, args ...any) {
	f.msg <- fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// A server that says nothing: Await fails the test naming the stream,
// AwaitClose reports no end.
func TestSilentServer(t *testing.T) {
	addr := silent(t)
	r := Dial(t, addr, 0)
	if _, closed := r.AwaitClose(100 * time.Millisecond); closed {
		t.Fatal("AwaitClose: closed, want a timeout")
	}
	msg := make(chan string, 1)
	r.tb = fatalTB{TB: t, msg: msg}
	go func() {
		r.Await(7, 100*time.Millisecond)
		msg <- "Await returned"
	}()
	if got, want := <-msg, "h2raw: stream 7: no answer within 100ms"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestDialFailure(t *testing.T) {
	lis := listen(t)
	addr := lis.Addr().String()
	lis.Close()
	msg := make(chan string, 1)
	go func() {
		Dial(fatalTB{TB: t, msg: msg}, addr, 0)
		msg <- "Dial returned"
	}()
	if got := <-msg; got == "Dial returned" {
		t.Fatal("Dial to a closed port did not fail the test")
	}
}
