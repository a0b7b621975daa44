package hbone

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// destination accepts one connection and runs fn on it.
func destination(t *testing.T, fn func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	accepted := make(chan net.Conn, 1)
	t.Cleanup(func() {
		ln.Close()
		// Unblock fn if it is stuck writing to a stalled tunnel.
		select {
		case c := <-accepted:
			c.Close()
		default:
		}
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		accepted <- c
		defer c.Close()
		fn(c.(*net.TCPConn))
	}()
	return ln.Addr().String()
}

// TestDestinationHalfClose: the destination sends a greeting and its FIN
// first; the client must read the greeting and EOF, then still be able to
// send, and the destination must receive those bytes and the client's FIN.
func TestDestinationHalfClose(t *testing.T) {
	got := make(chan int64, 1)
	dest := destination(t, func(c *net.TCPConn) {
		_, _ = c.Write([]byte("greeting"))
		_ = c.CloseWrite()
		n, _ := io.Copy(io.Discard, c)
		got <- n
	})
	f := startServer(t, nil)
	c := f.client(t, clientID)
	conn, err := c.Dial(ctx(t), f.key(), dest, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(conn)
	if err != nil || string(b) != "greeting" {
		t.Fatalf("read %q, %v; want the greeting then EOF", b, err)
	}
	payload := bytes.Repeat([]byte("x"), 100_000)
	if _, err := conn.Write(payload); err != nil {
		t.Fatalf("write after the destination's FIN: %v", err)
	}
	if err := conn.(closeWriter).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n != int64(len(payload)) {
			t.Fatalf("destination received %d bytes after its FIN, want %d", n, len(payload))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("destination never saw the client's FIN")
	}
}

// rawClient is a minimal HTTP/2 client on x/net's Framer, independent of
// our client: it proves the server's half-close on the wire.
type rawClient struct {
	t    *testing.T
	conn *tls.Conn
	fr   *http2.Framer
}

func dialRaw(t *testing.T, f *fixture) *rawClient {
	t.Helper()
	src := f.ca.source(t, clientID)
	conn, err := tls.Dial("tcp", f.addr, clientTLS(src, serverID, nil))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return &rawClient{t: t, conn: conn, fr: fr}
}

func (r *rawClient) connect(id uint32, target string) {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "CONNECT"})
	_ = enc.WriteField(hpack.HeaderField{Name: ":authority", Value: target})
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: buf.Bytes(), EndHeaders: true}); err != nil {
		r.t.Fatal(err)
	}
}

// readStream collects the response status, DATA and whether END_STREAM
// arrived on id, answering PINGs/SETTINGS and stopping at END_STREAM or
// RST_STREAM.
func (r *rawClient) readStream(id uint32) (status int, body []byte, ended bool, reset http2.ErrCode) {
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			r.t.Fatalf("read frame: %v (status %d, body %q)", err, status, body)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = r.fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				status, _ = strconv.Atoi(f.PseudoValue("status"))
				if f.StreamEnded() {
					return status, body, true, 0
				}
			}
		case *http2.DataFrame:
			if f.StreamID == id {
				body = append(body, f.Data()...)
				if len(f.Data()) > 0 {
					_ = r.fr.WriteWindowUpdate(0, uint32(len(f.Data())))
				}
				if f.StreamEnded() {
					return status, body, true, 0
				}
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return status, body, false, f.ErrCode
			}
		}
	}
}

// TestRawClientHalfClose: a client that ends its request stream
// (END_STREAM, TCP's FIN) must have the destination see EOF while the
// answer, computed after that EOF, still comes back and ends cleanly.
func TestRawClientHalfClose(t *testing.T) {
	dest := destination(t, func(c *net.TCPConn) {
		n, _ := io.Copy(io.Discard, c)
		_, _ = c.Write([]byte("got " + strconv.FormatInt(n, 10)))
		_ = c.CloseWrite()
	})
	f := startServer(t, nil)
	r := dialRaw(t, f)
	r.connect(1, dest)
	if err := r.fr.WriteData(1, false, []byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := r.fr.WriteData(1, true, []byte("de")); err != nil {
		t.Fatal(err)
	}
	status, body, ended, reset := r.readStream(1)
	if status != 200 || string(body) != "got 5" || !ended || reset != 0 {
		t.Fatalf("status %d body %q ended %v reset %v; want 200, \"got 5\", END_STREAM", status, body, ended, reset)
	}
}

// TestRawClientReset: RST_STREAM from the client aborts the destination
// connection (it reads an error or EOF, never more data).
func TestRawClientReset(t *testing.T) {
	closed := make(chan error, 1)
	dest := destination(t, func(c *net.TCPConn) {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := io.Copy(io.Discard, c)
		closed <- err
	})
	f := startServer(t, nil)
	r := dialRaw(t, f)
	r.connect(1, dest)
	if err := r.fr.WriteData(1, false, []byte("partial")); err != nil {
		t.Fatal(err)
	}
	// Wait for the 200 so the destination is connected.
	for {
		fr, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if h, ok := fr.(*http2.MetaHeadersFrame); ok && h.StreamID == 1 {
			break
		}
	}
	if err := r.fr.WriteRSTStream(1, http2.ErrCodeCancel); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		var ne net.Error
		if ok := asNetErr(err, &ne); ok && ne.Timeout() {
			t.Fatal("destination still open 5s after the reset")
		}
	case <-time.After(6 * time.Second):
		t.Fatal("destination not closed after the reset")
	}
}

func asNetErr(err error, ne *net.Error) bool {
	if err == nil {
		return false
	}
	e, ok := err.(net.Error)
	if ok {
		*ne = e
	}
	return ok
}

// TestClosedStreamsReturnConnectionWindow: streams closed with data still
// unread must give their share of the connection window back, or a
// connection that saw enough of them stalls for good.
func TestClosedStreamsReturnConnectionWindow(t *testing.T) {
	const perStream = streamWindow // the most a stream can have buffered
	src := func(c *net.TCPConn) {
		buf := make([]byte, 64<<10)
		for sent := 0; sent < 2*perStream; sent += len(buf) {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	}
	f := startServer(t, nil)
	c := f.client(t, clientID)
	n := connWindow/perStream + 2 // more than the connection window in total
	for i := range n {
		conn, err := c.Dial(ctx(t), f.key(), destination(t, src), Meta{})
		if err != nil {
			t.Fatal(err)
		}
		st := conn.(*clientConn).stream
		// Wait until the stream window is full: perStream bytes buffered.
		deadline := time.Now().Add(10 * time.Second)
		for {
			st.m.mu.Lock()
			buffered := len(st.rbuf) - st.roff
			st.m.mu.Unlock()
			if buffered >= perStream {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stream %d: only %d bytes buffered; the connection window ran out", i, buffered)
			}
			time.Sleep(2 * time.Millisecond)
		}
		conn.Close()
	}
	if c.Conns() != 1 {
		t.Fatalf("%d pooled connections, want all streams on one", c.Conns())
	}
}
