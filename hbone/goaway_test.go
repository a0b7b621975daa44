package hbone

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// echoRoundTrip sends n random bytes through conn while reading them back,
// so both directions carry data at once.
func echoRoundTrip(t *testing.T, conn net.Conn, n int) {
	t.Helper()
	out := make([]byte, n)
	_, _ = rand.Read(out)
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(out)
		werr <- err
	}()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	in := make([]byte, n)
	_, rerr := io.ReadFull(conn, in)
	_ = conn.SetReadDeadline(time.Time{})
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if rerr != nil {
		t.Fatalf("read: %v", rerr)
	}
	if !bytes.Equal(in, out) {
		t.Fatal("echoed bytes differ")
	}
}

func (pc *poolConn) peerGoAway() (got bool, last uint32, code http2.ErrCode) {
	pc.mux.mu.Lock()
	defer pc.mux.mu.Unlock()
	return pc.mux.gotGoAway, pc.mux.peerLast, pc.mux.peerCode
}

// TestShutdownDrainsOpenTunnel: a draining server tells the client with
// GOAWAY (NO_ERROR, last stream = the open tunnel), the open tunnel keeps
// carrying bytes both ways until it ends, Shutdown waits for it, and a new
// Dial to the same key goes over a new connection, here to the server that
// replaced the drained one at that address.
func TestShutdownDrainsOpenTunnel(t *testing.T) {
	echo := startEcho(t)
	a := startServer(t, nil)
	b := startServer(t, func(s *Server) { s.Source = a.ca.source(t, serverID) })
	var backend atomic.Value
	backend.Store(a.addr)
	c := a.client(t, clientID)
	c.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, backend.Load().(string))
	}

	conn1, err := c.Dial(ctx(t), a.key(), echo, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn1.Close()
	echoRoundTrip(t, conn1, 1000)
	pc1 := conn1.(*clientConn).pc

	shutdown := make(chan error, 1)
	go func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shutdown <- a.srv.Shutdown(sctx)
	}()
	// The first GOAWAY names the largest stream id, the final one (after
	// our client acked the server's PING) the open tunnel.
	waitFor(t, "the final GOAWAY", func() bool { got, last, _ := pc1.peerGoAway(); return got && last != 1<<31-1 })
	if _, last, code := pc1.peerGoAway(); last != 1 || code != http2.ErrCodeNo {
		t.Fatalf("GOAWAY last stream %d code %v, want 1 NO_ERROR", last, code)
	}

	// The tunnel in flight is untouched by the drain: 1 MiB each way,
	// more than the initial windows, so flow control keeps working too.
	echoRoundTrip(t, conn1, 1<<20)

	backend.Store(b.addr)
	conn2, err := c.Dial(ctx(t), a.key(), echo, Meta{})
	if err != nil {
		t.Fatalf("Dial after GOAWAY: %v", err)
	}
	defer conn2.Close()
	echoRoundTrip(t, conn2, 1000)
	if conn2.(*clientConn).pc == pc1 {
		t.Fatal("new stream went to the connection that got GOAWAY")
	}
	if got := c.Handshakes(); got != 2 {
		t.Errorf("handshakes = %d, want 2", got)
	}
	if got := b.srv.Stats().StreamsConnected.Load(); got != 1 {
		t.Errorf("second server connected %d streams, want 1", got)
	}
	echoRoundTrip(t, conn1, 1000)

	select {
	case err := <-shutdown:
		t.Fatalf("Shutdown returned %v while a tunnel was open", err)
	default:
	}
	// The tunnel ends like TCP: our FIN, the echo's FIN, then close.
	if err := conn1.(closeWriter).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	_ = conn1.SetReadDeadline(time.Now().Add(5 * time.Second))
	if rest, err := io.ReadAll(conn1); err != nil || len(rest) != 0 {
		t.Fatalf("after CloseWrite read %d bytes, %v; want EOF", len(rest), err)
	}
	conn1.Close()
	select {
	case err := <-shutdown:
		if err != nil {
			t.Fatalf("Shutdown = %v, want nil once the last tunnel ended", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown still waiting 5s after the last tunnel ended")
	}
	if got := a.srv.Stats().StreamsConnected.Load(); got != 1 {
		t.Errorf("drained server connected %d streams, want 1", got)
	}
}

// TestShutdownIdleConnection: a connection without open streams gets
// the two GOAWAYs (the final one naming the last stream it opened, sent
// on the PING's ack or, from a client that does not ack, after
// drainAckWait) and is closed right after; Shutdown waits for nothing
// else.
func TestShutdownIdleConnection(t *testing.T) {
	tests := []struct {
		name     string
		finished int  // streams opened and ended before the drain
		ack      bool // the client acks the drain PING
	}{
		{"never used", 0, true},
		{"after one finished stream", 1, true},
		{"client does not ack the PING", 1, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startServer(t, nil)
			r := dialRaw(t, f)
			var last uint32
			for i := range tt.finished {
				last = uint32(2*i + 1)
				r.connect(last, startEcho(t))
				if err := r.fr.WriteData(last, true, []byte("x")); err != nil {
					t.Fatal(err)
				}
				if status, body, ended, _ := r.readStream(last); status != 200 || string(body) != "x" || !ended {
					t.Fatalf("stream %d: status %d body %q ended %v", last, status, body, ended)
				}
			}
			start := time.Now()
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			shutdown := make(chan error, 1)
			go func() { shutdown <- f.srv.Shutdown(sctx) }()

			ga, _ := r.drainGoAway(t, tt.ack, nil)
			if ga.LastStreamID != last || ga.ErrCode != http2.ErrCodeNo {
				t.Fatalf("final GOAWAY last stream %d code %v, want %d NO_ERROR", ga.LastStreamID, ga.ErrCode, last)
			}
			if waited := time.Since(start); tt.ack && waited > drainAckWait/2 {
				t.Errorf("final GOAWAY after %v though the PING was acked", waited)
			}
			// Then the connection ends, long before our 10 s deadline.
			for {
				_, err := r.fr.ReadFrame()
				if err == nil {
					continue
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					t.Fatal("idle connection still open after its GOAWAY")
				}
				break
			}
			if err := <-shutdown; err != nil {
				t.Fatalf("Shutdown = %v", err)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("Shutdown of an idle connection took %v", d)
			}
		})
	}
}

// drainGoAway reads the server's drain on the wire: the first GOAWAY
// (NO_ERROR, largest stream id) and the PING after it, then runs
// beforeAck (frames the client sends before it has seen the GOAWAY, as
// far as the server can tell), acks the PING when ack is set, and returns
// the final GOAWAY and the response statuses seen meanwhile. Other frames
// are dropped.
func (r *rawClient) drainGoAway(t *testing.T, ack bool, beforeAck func()) (http2.GoAwayFrame, map[uint32]int) {
	t.Helper()
	statuses := map[uint32]int{}
	var sawFirst bool
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatalf("connection ended during the drain (first GOAWAY seen: %v): %v", sawFirst, err)
		}
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			if !sawFirst {
				if f.LastStreamID != 1<<31-1 || f.ErrCode != http2.ErrCodeNo {
					t.Fatalf("first GOAWAY last stream %d code %v, want 2^31-1 NO_ERROR", f.LastStreamID, f.ErrCode)
				}
				sawFirst = true
				continue
			}
			return *f, statuses
		case *http2.MetaHeadersFrame:
			statuses[f.StreamID] = statusOf(f)
		case *http2.PingFrame:
			if f.IsAck() || !sawFirst {
				continue
			}
			if beforeAck != nil {
				beforeAck()
			}
			if ack {
				if err := r.fr.WritePing(true, f.Data); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
}

// TestShutdownTwoStepGoAway: on the wire, a CONNECT that crossed the
// first GOAWAY (sent before the client acked the PING) is still served
// and named by the final GOAWAY; one sent after the final GOAWAY is
// refused with REFUSED_STREAM (not processed: safe to retry); the streams
// below last-stream-id carry data and end cleanly, and then the
// connection closes.
func TestShutdownTwoStepGoAway(t *testing.T) {
	echo := startEcho(t)
	f := startServer(t, nil)
	r := dialRaw(t, f)
	r.connect(1, echo)
	if err := r.fr.WriteData(1, false, []byte("a")); err != nil {
		t.Fatal(err)
	}
	var status int
	var body []byte
	for len(body) < 1 {
		fr, err := r.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		switch fr := fr.(type) {
		case *http2.MetaHeadersFrame:
			status = statusOf(fr)
		case *http2.DataFrame:
			body = append(body, fr.Data()...)
		}
	}
	if status != 200 || string(body) != "a" {
		t.Fatalf("stream 1: status %d body %q", status, body)
	}

	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- f.srv.Shutdown(sctx) }()
	ga, statuses := r.drainGoAway(t, true, func() { r.connect(3, echo) })
	if ga.LastStreamID != 3 || ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("final GOAWAY last stream %d code %v, want 3 NO_ERROR", ga.LastStreamID, ga.ErrCode)
	}

	r.connect(5, echo)
	for _, id := range []uint32{1, 3} {
		if err := r.fr.WriteData(id, true, []byte{'b', byte('0' + id)}); err != nil {
			t.Fatal(err)
		}
	}
	var refused bool
	bodies := map[uint32]string{}
	ended := map[uint32]bool{}
	var closeErr error
	for closeErr == nil {
		fr, err := r.fr.ReadFrame()
		if err != nil {
			closeErr = err
			break
		}
		switch fr := fr.(type) {
		case *http2.RSTStreamFrame:
			if fr.StreamID == 5 && fr.ErrCode == http2.ErrCodeRefusedStream {
				refused = true
			} else {
				t.Fatalf("RST_STREAM %d %v", fr.StreamID, fr.ErrCode)
			}
		case *http2.MetaHeadersFrame:
			statuses[fr.StreamID] = statusOf(fr)
		case *http2.DataFrame:
			bodies[fr.StreamID] += string(fr.Data())
			ended[fr.StreamID] = ended[fr.StreamID] || fr.StreamEnded()
		}
	}
	if !refused {
		t.Error("stream 5, opened after the final GOAWAY, was not refused with REFUSED_STREAM")
	}
	if statuses[3] != 200 || statuses[5] != 0 {
		t.Errorf("answers: stream 3 %d, stream 5 %d; want 200 and none", statuses[3], statuses[5])
	}
	if bodies[1] != "b1" || !ended[1] || bodies[3] != "b3" || !ended[3] {
		t.Errorf("after the drain began: bodies %v ended %v; want b1, b3 and END_STREAM on both", bodies, ended)
	}
	var ne net.Error
	if errors.As(closeErr, &ne) && ne.Timeout() {
		t.Error("connection still open after its last stream ended")
	}
	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown = %v", err)
	}
}

// TestShutdownDeadline: a tunnel that outlives the drain deadline is cut,
// and Shutdown reports the deadline.
func TestShutdownDeadline(t *testing.T) {
	echo := startEcho(t)
	f := startServer(t, nil)
	c := f.client(t, clientID)
	conn, err := c.Dial(ctx(t), f.key(), echo, Meta{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := f.srv.Shutdown(sctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = conn.Read(make([]byte, 1))
	var ne net.Error
	if err == nil || (errors.As(err, &ne) && ne.Timeout()) {
		t.Fatalf("read after the drain deadline: %v, want the tunnel cut", err)
	}
}

func statusOf(f *http2.MetaHeadersFrame) int {
	n, _ := strconv.Atoi(f.PseudoValue("status"))
	return n
}

// fakeAction is how fakeServer answers one CONNECT.
type fakeAction int

const (
	fakeAccept    fakeAction = iota // 200, then echo DATA
	fakeRefuse                      // RST_STREAM(REFUSED_STREAM)
	fakeGoAway                      // GOAWAY(NO_ERROR) naming the previous stream
	fakeGoAwayErr                   // GOAWAY(ENHANCE_YOUR_CALM) naming the previous stream
)

// fakeServer is an HBONE endpoint on x/net's Framer, independent of our
// server, that answers the n-th CONNECT of its conn-th connection (both
// from 0) as decide says: it produces the races a real server only
// produces by chance (a CONNECT crossing a GOAWAY on the wire).
type fakeServer struct {
	addr   string
	conns  atomic.Int32
	opened atomic.Int32 // CONNECTs received
}

func startFake(t *testing.T, ca *testCA, decide func(conn, n int) fakeAction) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := &fakeServer{addr: ln.Addr().String()}
	conf := serverTLS(ca.source(t, serverID), nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			idx := int(fs.conns.Add(1)) - 1
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				fs.serve(tls.Server(c, conf), func(n int) fakeAction { return decide(idx, n) })
			}()
		}
	}()
	return fs
}

func (fs *fakeServer) serve(conn *tls.Conn, decide func(n int) fakeAction) {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(conn, preface); err != nil {
		return
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if fr.WriteSettings() != nil {
		return
	}
	var hbuf bytes.Buffer
	enc := hpack.NewEncoder(&hbuf)
	accepted := map[uint32]bool{}
	var n int
	var last uint32
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				err = fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				err = fr.WritePing(true, f.Data)
			}
		case *http2.MetaHeadersFrame:
			fs.opened.Add(1)
			switch decide(n) {
			case fakeAccept:
				accepted[f.StreamID] = true
				last = f.StreamID
				hbuf.Reset()
				_ = enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
				err = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: hbuf.Bytes(), EndHeaders: true})
			case fakeRefuse:
				err = fr.WriteRSTStream(f.StreamID, http2.ErrCodeRefusedStream)
			case fakeGoAway:
				err = fr.WriteGoAway(last, http2.ErrCodeNo, nil)
			case fakeGoAwayErr:
				err = fr.WriteGoAway(last, http2.ErrCodeEnhanceYourCalm, []byte("test"))
			}
			n++
		case *http2.DataFrame:
			if accepted[f.StreamID] && (len(f.Data()) > 0 || f.StreamEnded()) {
				err = fr.WriteData(f.StreamID, f.StreamEnded(), f.Data())
			}
		}
		if err != nil {
			return
		}
	}
}

// TestNotProcessedStreamRetried: a CONNECT the server did not process
// (refused, or above the last-stream-id of a GOAWAY that crossed it on
// the wire, with or without an error code) is opened again on a new
// connection, invisibly to the caller; the tunnel already open on the
// first connection goes on. It is retried once only.
func TestNotProcessedStreamRetried(t *testing.T) {
	tests := []struct {
		name   string
		second fakeAction // answer to the 2nd CONNECT on the 1st connection
		retry  fakeAction // answer to every CONNECT on later connections
		ok     bool
		// drained: the first connection must take no more streams.
		drained bool
	}{
		{"REFUSED_STREAM", fakeRefuse, fakeAccept, true, false},
		{"GOAWAY NO_ERROR", fakeGoAway, fakeAccept, true, true},
		{"GOAWAY with error code", fakeGoAwayErr, fakeAccept, true, true},
		{"refused again on the retry", fakeRefuse, fakeRefuse, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca := newTestCA(t, "mesh")
			fs := startFake(t, ca, func(conn, n int) fakeAction {
				switch {
				case conn > 0:
					return tt.retry
				case n == 1:
					return tt.second
				}
				return fakeAccept
			})
			c := &Client{Source: ca.source(t, clientID)}
			t.Cleanup(func() { c.Close() })
			key := Key{Src: clientID, Dst: serverID, Addr: fs.addr}
			target := "127.0.0.1:9" // the fake echoes; nothing is dialed

			conn1, err := c.Dial(ctx(t), key, target, Meta{})
			if err != nil {
				t.Fatal(err)
			}
			defer conn1.Close()
			echoRoundTrip(t, conn1, 1000)

			conn2, err := c.Dial(ctx(t), key, target, Meta{})
			if got := fs.conns.Load(); got != 2 {
				t.Errorf("connections = %d, want 2 (one retry on a new one)", got)
			}
			if got := fs.opened.Load(); got != 3 {
				t.Errorf("CONNECTs sent = %d, want 3", got)
			}
			if !tt.ok {
				if !errors.Is(err, ErrStreamRefused) {
					t.Fatalf("Dial = %v, want ErrStreamRefused after one retry", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial was not retried: %v", err)
			}
			defer conn2.Close()
			pc1, pc2 := conn1.(*clientConn).pc, conn2.(*clientConn).pc
			if pc1 == pc2 {
				t.Fatal("retry went to the same connection")
			}
			echoRoundTrip(t, conn2, 1000)
			echoRoundTrip(t, conn1, 1000)
			if tt.drained {
				if pc1.mux.alive() {
					t.Error("connection that got GOAWAY still takes new streams")
				}
				conn3, err := c.Dial(ctx(t), key, target, Meta{})
				if err != nil {
					t.Fatal(err)
				}
				defer conn3.Close()
				if conn3.(*clientConn).pc != pc2 {
					t.Error("a later Dial did not use the healthy connection")
				}
			}
		})
	}
}
