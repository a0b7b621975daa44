package httpproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshlet/meshlet/state"
)

// fakeH2Frame is a frame the fake server read, copied out of the framer.
type fakeH2Frame struct {
	typ      http2.FrameType
	stream   uint32
	end      bool
	data     []byte
	fields   []hpack.HeaderField
	code     http2.ErrCode
	settings []http2.Setting
}

// fakeH2 is a scripted HTTP/2 server on one accepted connection: a reader
// goroutine answers PING and SETTINGS and hands every other frame to the
// test, which writes the server's frames itself.
type fakeH2 struct {
	t      *testing.T
	conn   net.Conn
	frames chan fakeH2Frame
	done   chan struct{}
	// silent stops PING acks (a peer that no longer answers).
	silent atomic.Bool

	mu   sync.Mutex
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
}

// newFakeH2 returns a client connection to a fake server that advertised
// settings, with the handshake done.
func newFakeH2(t *testing.T, settings ...http2.Setting) (*h2cliConn, *fakeH2) {
	t.Helper()
	return newFakeH2Cfg(t, h2cConfig{}, settings...)
}

func newFakeH2Cfg(t *testing.T, cfg h2cConfig, settings ...http2.Setting) (*h2cliConn, *fakeH2) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	cc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc := <-accepted
	if sc == nil {
		t.Fatal("accept failed")
	}
	f := &fakeH2{t: t, conn: sc, frames: make(chan fakeH2Frame, 1024), done: make(chan struct{})}
	f.fr = http2.NewFramer(sc, sc)
	f.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	f.enc = hpack.NewEncoder(&f.hbuf)
	c := newH2cliConn(cc, cfg)
	preface := make([]byte, len(h2Preface))
	if _, err := io.ReadFull(sc, preface); err != nil || string(preface) != h2Preface {
		t.Fatalf("preface %q: %v", preface, err)
	}
	f.mu.Lock()
	_ = f.fr.WriteSettings(settings...)
	f.mu.Unlock()
	go f.readLoop()
	t.Cleanup(func() {
		c.Close()
		sc.Close()
		<-f.done
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	return c, f
}

func (f *fakeH2) readLoop() {
	defer close(f.done)
	for {
		fr, err := f.fr.ReadFrame()
		if err != nil {
			return
		}
		var out fakeH2Frame
		out.typ, out.stream = fr.Header().Type, fr.Header().StreamID
		switch fr := fr.(type) {
		case *http2.PingFrame:
			if !fr.IsAck() && !f.silent.Load() {
				f.mu.Lock()
				_ = f.fr.WritePing(true, fr.Data)
				f.mu.Unlock()
			}
			continue
		case *http2.SettingsFrame:
			if !fr.IsAck() {
				_ = fr.ForeachSetting(func(s http2.Setting) error { out.settings = append(out.settings, s); return nil })
				f.mu.Lock()
				_ = f.fr.WriteSettingsAck()
				f.mu.Unlock()
			}
		case *http2.MetaHeadersFrame:
			out.end, out.fields = fr.StreamEnded(), fr.Fields
		case *http2.DataFrame:
			out.end, out.data = fr.StreamEnded(), append([]byte(nil), fr.Data()...)
		case *http2.RSTStreamFrame:
			out.code = fr.ErrCode
		case *http2.GoAwayFrame:
			out.code = fr.ErrCode
		}
		f.frames <- out
	}
}

// next returns the next frame of one of the given types.
func (f *fakeH2) next(types ...http2.FrameType) fakeH2Frame {
	f.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case fr := <-f.frames:
			for _, t := range types {
				if fr.typ == t {
					return fr
				}
			}
		case <-timeout:
			f.t.Fatalf("no %v frame from the client", types)
		}
	}
}

func (f *fakeH2) headers(id uint32, end bool, kv ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hbuf.Reset()
	for i := 0; i < len(kv); i += 2 {
		_ = f.enc.WriteField(hpack.HeaderField{Name: kv[i], Value: kv[i+1]})
	}
	_ = f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: f.hbuf.Bytes(), EndStream: end, EndHeaders: true})
}

func (f *fakeH2) write(fn func(fr *http2.Framer) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := fn(f.fr); err != nil {
		f.t.Errorf("fake server write: %v", err)
	}
}

func fieldValue(fields []hpack.HeaderField, name string) (string, bool) {
	for _, hf := range fields {
		if hf.Name == name {
			return hf.Value, true
		}
	}
	return "", false
}

// roundTripAsync runs RoundTrip on its own goroutine.
func roundTripAsync(c *h2cliConn, req *http.Request) chan rtResult {
	ch := make(chan rtResult, 1)
	go func() {
		resp, err := c.RoundTrip(req)
		ch <- rtResult{resp, err}
	}()
	return ch
}

type rtResult struct {
	resp *http.Response
	err  error
}

func newReq(t *testing.T, ctx context.Context, method, url string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestH2cliRoundTripFrames checks what goes on the wire: pseudo-headers,
// no hop-by-hop fields, END_STREAM on HEADERS without a body, on the last
// DATA (or an empty one) with a body, and trailers only when the request
// has them. The response's trailers appear in resp.Trailer after EOF.
func TestH2cliRoundTripFrames(t *testing.T) {
	h2LeakCheck(t)
	c, f := newFakeH2(t)
	cases := []struct {
		name     string
		body     string
		trailer  http.Header
		wantEnd  string // "headers", "data" or "trailers"
		wantTE   bool
		respTrl  bool
		wantBody string
	}{
		{name: "get", wantEnd: "headers", wantBody: "hi"},
		{name: "post body", body: "hello", wantEnd: "data", wantTE: true, respTrl: true, wantBody: "ok"},
		{name: "post trailers", body: "x", trailer: http.Header{"Grpc-Foo": {"bar"}}, wantEnd: "trailers", respTrl: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			method := "GET"
			var body io.Reader
			if tc.body != "" {
				method, body = "POST", io.NopCloser(strings.NewReader(tc.body))
			}
			req := newReq(t, context.Background(), method, "http://svc.local/p?q=1", body)
			req.ContentLength = -1
			req.Header.Set("Connection", "close")
			req.Header.Set("X-Custom", "v")
			if tc.wantTE {
				req.Header.Set("Te", "trailers")
			}
			req.Trailer = tc.trailer
			res := roundTripAsync(c, req)
			h := f.next(http2.FrameHeaders)
			for name, want := range map[string]string{":method": method, ":path": "/p?q=1", ":authority": "svc.local", ":scheme": "http", "x-custom": "v"} {
				if got, _ := fieldValue(h.fields, name); got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			if _, ok := fieldValue(h.fields, "connection"); ok {
				t.Error("connection header forwarded")
			}
			if got, ok := fieldValue(h.fields, "te"); ok != tc.wantTE || (ok && got != "trailers") {
				t.Errorf("te = %q (%v), want present=%v", got, ok, tc.wantTE)
			}
			var got []byte
			end := ""
			if h.end {
				end = "headers"
			}
			for end == "" {
				fr := f.next(http2.FrameData, http2.FrameHeaders)
				if fr.typ == http2.FrameHeaders {
					if v, _ := fieldValue(fr.fields, "grpc-foo"); v != "bar" || !fr.end {
						t.Errorf("trailers %v end=%v", fr.fields, fr.end)
					}
					end = "trailers"
					break
				}
				got = append(got, fr.data...)
				if fr.end {
					end = "data"
				}
			}
			if end != tc.wantEnd || string(got) != tc.body {
				t.Errorf("request ended on %s with body %q, want %s with %q", end, got, tc.wantEnd, tc.body)
			}
			f.headers(h.stream, false, ":status", "200", "content-type", "text/plain")
			f.write(func(fr *http2.Framer) error { return fr.WriteData(h.stream, !tc.respTrl, []byte(tc.wantBody)) })
			if tc.respTrl {
				f.headers(h.stream, true, "grpc-status", "0")
			}
			r := <-res
			if r.err != nil {
				t.Fatal(r.err)
			}
			b, err := io.ReadAll(r.resp.Body)
			r.resp.Body.Close()
			if err != nil || string(b) != tc.wantBody || r.resp.StatusCode != 200 || r.resp.Header.Get("Content-Type") != "text/plain" {
				t.Fatalf("response %d %v body %q err %v", r.resp.StatusCode, r.resp.Header, b, err)
			}
			if got := r.resp.Trailer.Get("Grpc-Status"); (got == "0") != tc.respTrl {
				t.Errorf("trailer grpc-status %q, want present=%v", got, tc.respTrl)
			}
		})
	}
	if st := c.State(); st.StreamsActive != 0 {
		t.Errorf("%d streams still active", st.StreamsActive)
	}
}

// TestH2cliGoAwayMidStream: after GOAWAY naming stream 1, stream 3 fails
// as REFUSED_STREAM (the router retries it elsewhere), stream 1 completes,
// the connection takes no new streams and closes once stream 1 is done.
func TestH2cliGoAwayMidStream(t *testing.T) {
	h2LeakCheck(t)
	c, f := newFakeH2(t)
	r1 := roundTripAsync(c, newReq(t, context.Background(), "GET", "http://a/1", nil))
	h1 := f.next(http2.FrameHeaders)
	r3 := roundTripAsync(c, newReq(t, context.Background(), "GET", "http://a/3", nil))
	h3 := f.next(http2.FrameHeaders)
	if h1.stream != 1 || h3.stream != 3 {
		t.Fatalf("streams %d, %d", h1.stream, h3.stream)
	}
	f.headers(1, false, ":status", "200")
	res1 := <-r1
	if res1.err != nil {
		t.Fatal(res1.err)
	}
	f.write(func(fr *http2.Framer) error { return fr.WriteGoAway(1, http2.ErrCodeNo, nil) })
	res3 := <-r3
	if !isRefusedStream(res3.err) {
		t.Fatalf("stream above last-stream-id: err %v, want REFUSED_STREAM", res3.err)
	}
	if c.CanTakeNewRequest() || !c.State().Closing {
		t.Error("connection still takes streams after GOAWAY")
	}
	if _, err := c.RoundTrip(newReq(t, context.Background(), "GET", "http://a/5", nil)); !isRefusedStream(err) {
		t.Errorf("new stream after GOAWAY: %v, want REFUSED_STREAM", err)
	}
	f.write(func(fr *http2.Framer) error { return fr.WriteData(1, true, []byte("body")) })
	b, err := io.ReadAll(res1.resp.Body)
	res1.resp.Body.Close()
	if err != nil || string(b) != "body" {
		t.Fatalf("stream 1 body %q, %v", b, err)
	}
	f.next(http2.FrameGoAway) // the client closes once idle
	deadline := time.Now().Add(3 * time.Second)
	for !c.State().Closed {
		if time.Now().After(deadline) {
			t.Fatal("connection not closed after its last stream")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestH2cliServerReset: RST_STREAM before the head fails RoundTrip with
// the peer's code; after the head it fails the body read.
func TestH2cliServerReset(t *testing.T) {
	h2LeakCheck(t)
	c, f := newFakeH2(t)
	r := roundTripAsync(c, newReq(t, context.Background(), "GET", "http://a/", nil))
	h := f.next(http2.FrameHeaders)
	f.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(h.stream, http2.ErrCodeInternal) })
	res := <-r
	var se http2.StreamError
	if !errors.As(res.err, &se) || se.Code != http2.ErrCodeInternal {
		t.Fatalf("err %v, want INTERNAL_ERROR stream error", res.err)
	}

	r = roundTripAsync(c, newReq(t, context.Background(), "GET", "http://a/", nil))
	h = f.next(http2.FrameHeaders)
	f.headers(h.stream, false, ":status", "200")
	f.write(func(fr *http2.Framer) error { return fr.WriteData(h.stream, false, []byte("part")) })
	res = <-r
	if res.err != nil {
		t.Fatal(res.err)
	}
	f.write(func(fr *http2.Framer) error { return fr.WriteRSTStream(h.stream, http2.ErrCodeCancel) })
	b, err := io.ReadAll(res.resp.Body)
	res.resp.Body.Close()
	if string(b) != "part" || !errors.As(err, &se) || se.Code != http2.ErrCodeCancel {
		t.Fatalf("body %q err %v, want the part then CANCEL", b, err)
	}
	if c.State().StreamsActive != 0 || !c.CanTakeNewRequest() {
		t.Error("reset streams still count, or the connection is unusable")
	}
}

// TestH2cliCancel: cancelling the request context resets the stream with
// CANCEL, before the head and while the body streams.
func TestH2cliCancel(t *testing.T) {
	h2LeakCheck(t)
	c, f := newFakeH2(t)
	ctx, cancel := context.WithCancel(context.Background())
	r := roundTripAsync(c, newReq(t, ctx, "GET", "http://a/", nil))
	h := f.next(http2.FrameHeaders)
	cancel()
	if res := <-r; !errors.Is(res.err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", res.err)
	}
	if rst := f.next(http2.FrameRSTStream); rst.stream != h.stream || rst.code != http2.ErrCodeCancel {
		t.Fatalf("RST_STREAM %d %v", rst.stream, rst.code)
	}

	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	r = roundTripAsync(c, newReq(t, ctx, "GET", "http://a/", nil))
	h = f.next(http2.FrameHeaders)
	f.headers(h.stream, false, ":status", "200")
	res := <-r
	if res.err != nil {
		t.Fatal(res.err)
	}
	readErr := make(chan error, 1)
	go func() { _, err := io.ReadAll(res.resp.Body); readErr <- err }()
	time.Sleep(20 * time.Millisecond) // let the read block
	cancel()
	if err := <-readErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("body read err %v, want context.Canceled", err)
	}
	res.resp.Body.Close()
	if rst := f.next(http2.FrameRSTStream); rst.stream != h.stream || rst.code != http2.ErrCodeCancel {
		t.Fatalf("RST_STREAM %d %v", rst.stream, rst.code)
	}
}

// TestH2cliMaxStreamsOne: a peer allowing one stream gets one at a time;
// the pool opens a second connection for a second concurrent request.
func TestH2cliMaxStreamsOne(t *testing.T) {
	h2LeakCheck(t)
	c, f := newFakeH2(t, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1})
	if n := c.State().MaxConcurrentStreams; n != 1 {
		t.Fatalf("MaxConcurrentStreams %d, want 1", n)
	}
	if !c.ReserveNewRequest() {
		t.Fatal("first reservation refused")
	}
	if c.ReserveNewRequest() || c.CanTakeNewRequest() {
		t.Fatal("second stream allowed over the peer's limit")
	}
	r := roundTripAsync(c, newReq(t, context.Background(), "GET", "http://a/", nil))
	h := f.next(http2.FrameHeaders)
	f.headers(h.stream, true, ":status", "204")
	res := <-r
	if res.err != nil || res.resp.StatusCode != 204 {
		t.Fatalf("%v %v", res.resp, res.err)
	}
	res.resp.Body.Close()
	if !c.CanTakeNewRequest() {
		t.Fatal("slot not freed after the stream ended")
	}

	// Through the proxy: three concurrent streams to a backend allowing
	// one each need three connections, and all succeed.
	const n = 3
	b := newH2Backend(t, 1, newBarrier(n))
	e := newH2Env(t, h2EnvOpts{
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
		rc:       routeAll("be"),
	})
	client, _ := h2cClient(t)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(fmt.Sprintf("http://%s/s/%d", e.addr, i))
			if err != nil {
				errs <- err
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ok" {
				errs <- fmt.Errorf("stream %d: %d %q flags=%s", i, resp.StatusCode, body, resp.Header.Get(HeaderResponseFlags))
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := b.conns.Load(); got != n {
		t.Errorf("backend saw %d connections, want %d", got, n)
	}
}

// TestH2cliFlowControl100MB sends 100 MB up and 100 MB down on one stream
// through the proxy (downstream server, upstream client): both directions
// wait on and return window credit many times, and every byte arrives.
func TestH2cliFlowControl100MB(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MB each way")
	}
	h2LeakCheck(t)
	const size = 100 << 20
	b := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil || n != size {
			http.Error(w, fmt.Sprintf("read %d: %v", n, err), 500)
			return
		}
		w.Header().Set("X-Sum", fmt.Sprintf("%x", h.Sum(nil)))
		w.WriteHeader(200)
		io.Copy(w, io.LimitReader(&patternReader{}, size))
	}))
	e := newH2Env(t, h2EnvOpts{
		clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
		rc:       routeAll("be"),
	})
	client, _ := h2cClient(t)
	want := sha256.New()
	io.Copy(want, io.LimitReader(&patternReader{}, size))
	wantSum := fmt.Sprintf("%x", want.Sum(nil))

	req, _ := http.NewRequest("POST", "http://"+e.addr+"/up", io.LimitReader(&patternReader{}, size))
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Sum") != wantSum {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		t.Fatalf("upload: status %d sum %q body %q", resp.StatusCode, resp.Header.Get("X-Sum"), body)
	}
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	if err != nil || n != size || fmt.Sprintf("%x", got.Sum(nil)) != wantSum {
		t.Fatalf("download: %d bytes, err %v, sum match %v", n, err, fmt.Sprintf("%x", got.Sum(nil)) == wantSum)
	}
}

// patternReader yields a repeating, position-dependent byte pattern.
type patternReader struct{ pos int }

func (r *patternReader) Read(p []byte) (int, error) {
	for i := range p {
		n := r.pos + i
		p[i] = byte(n*7 + n>>8)
	}
	r.pos += len(p)
	return len(p), nil
}

// TestH2cliHealth: an idle connection closes after its idle timeout, a
// busy one does not; a peer that stops answering PINGs gets its
// connection closed and its streams failed.
func TestH2cliHealth(t *testing.T) {
	h2LeakCheck(t)
	waitClosed := func(t *testing.T, c *h2cliConn, within time.Duration) bool {
		deadline := time.Now().Add(within)
		for !c.State().Closed {
			if time.Now().After(deadline) {
				return false
			}
			time.Sleep(5 * time.Millisecond)
		}
		return true
	}
	t.Run("idle timeout", func(t *testing.T) {
		c, f := newFakeH2Cfg(t, h2cConfig{idleTimeout: 50 * time.Millisecond})
		r := roundTripAsync(c, newReq(t, context.Background(), "GET", "http://a/", nil))
		h := f.next(http2.FrameHeaders)
		time.Sleep(120 * time.Millisecond) // a stream is open: not idle
		if c.State().Closed {
			t.Fatal("closed with a stream open")
		}
		f.headers(h.stream, true, ":status", "200")
		res := <-r
		if res.err != nil {
			t.Fatal(res.err)
		}
		res.resp.Body.Close()
		if !waitClosed(t, c, 2*time.Second) {
			t.Fatal("idle connection not closed")
		}
	})
	t.Run("ping timeout", func(t *testing.T) {
		c, f := newFakeH2Cfg(t, h2cConfig{readIdle: 30 * time.Millisecond, pingTimeout: 30 * time.Millisecond})
		f.silent.Store(true)
		r := roundTripAsync(c, newReq(t, context.Background(), "GET", "http://a/", nil))
		f.next(http2.FrameHeaders)
		select {
		case res := <-r:
			if res.err == nil {
				t.Fatal("stream on a dead connection succeeded")
			}
		case <-time.After(3 * time.Second):
			t.Fatal("stream still waiting on an unresponsive peer")
		}
		if !waitClosed(t, c, 2*time.Second) {
			t.Fatal("connection to an unresponsive peer not closed")
		}
	})
}
