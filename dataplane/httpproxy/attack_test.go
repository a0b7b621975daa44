package httpproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshlet/meshlet/internal/h2raw"
	"github.com/meshlet/meshlet/state"
)

// Attacks on the downstream HTTP/2 server with a raw framer client
// (internal/h2raw), against a recording HTTP/1.1 upstream. The
// binary-level versions are in integration/attack_test.go.

// recorder is an upstream that counts requests and the most it saw at
// once. Each request is held for hold (or until the proxy cancels it).
type recorder struct {
	hits, inflight, peak atomic.Int64
	hold                 time.Duration
	addr                 string
}

func newRecorder(t *testing.T, hold time.Duration) *recorder {
	r := &recorder{hold: hold}
	b := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		n := r.inflight.Add(1)
		defer r.inflight.Add(-1)
		for {
			p := r.peak.Load()
			if n <= p || r.peak.CompareAndSwap(p, n) {
				break
			}
		}
		_, _ = io.Copy(io.Discard, req.Body)
		if r.hold > 0 {
			select {
			case <-time.After(r.hold):
			case <-req.Context().Done():
			}
		}
		_, _ = io.WriteString(w, "ok")
	}))
	r.addr = b.hostport()
	return r
}

// countConn counts the bytes the server read from a connection.
type countConn struct {
	net.Conn
	n *atomic.Int64
}

func (c *countConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

type attackEnvOpts struct {
	hcm  *state.HTTPConnectionManager
	hold time.Duration
}

// attackEnv is an HTTP/2 proxy in front of a recorder; read counts the
// bytes the proxy read from all downstream connections.
type attackEnv struct {
	*h2Env
	up   *recorder
	read *atomic.Int64
}

func newAttackEnv(t *testing.T, o attackEnvOpts) *attackEnv {
	up := newRecorder(t, o.hold)
	read := new(atomic.Int64)
	hcm := o.hcm
	if hcm == nil {
		hcm = &state.HTTPConnectionManager{}
	}
	hcm.Codec = state.CodecHTTP2
	e := newH2Env(t, h2EnvOpts{
		hcm:      hcm,
		clusters: []*state.Cluster{h1Cluster("be", up.addr)},
		rc:       routeAll("be"),
		serve: func(p *Proxy, ctx context.Context, conn net.Conn, hcm *state.HTTPConnectionManager, info *ConnInfo) {
			p.serveHTTP2(ctx, &countConn{Conn: conn, n: read}, hcm, info)
		},
	})
	return &attackEnv{h2Env: e, up: up, read: read}
}

// ---- tests ----

// TestH2RapidReset: a client opening and resetting 10k streams on one
// connection is cut off by the premature-reset budget; the upstream never
// sees more than the stream limit at once; a second client is served
// throughout; the stream goroutines are gone afterwards.
func TestH2RapidReset(t *testing.T) {
	h2LeakCheck(t)
	const limit = 20
	e := newAttackEnv(t, attackEnvOpts{
		hcm:  &state.HTTPConnectionManager{HTTP2MaxConcurrentStreams: limit},
		hold: 50 * time.Millisecond,
	})
	client, _ := h2cClient(t)
	fetch := func() error {
		resp, err := client.Get("http://" + e.addr + "/ok")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	if err := fetch(); err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()

	// The second client keeps requesting during the attack.
	stop := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				if n == 0 {
					served <- errors.New("no request completed during the attack")
					return
				}
				served <- nil
				return
			default:
			}
			if err := fetch(); err != nil {
				served <- err
				return
			}
			n++
		}
	}()

	r := h2raw.Dial(t, e.addr, 0)
	sent := 0
	var werr error
	for id := uint32(1); sent < 10000 && werr == nil; id += 2 {
		r.Headers(id, true, h2raw.GET("/attack")...)
		_ = r.Framer.WriteRSTStream(id, http2.ErrCodeCancel)
		sent++
		if sent%100 == 0 {
			werr = r.Flush()
		}
	}
	if werr == nil {
		_ = r.Flush()
	}
	code, closed := r.AwaitClose(5 * time.Second)
	close(stop)
	if err := <-served; err != nil {
		t.Errorf("second client: %v", err)
	}
	if !closed {
		t.Fatalf("connection still open after %d HEADERS+RST_STREAM", sent)
	}
	if code == nil || *code != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY code %v, want ENHANCE_YOUR_CALM", code)
	}
	if p := e.up.peak.Load(); p > limit {
		t.Errorf("upstream saw %d concurrent requests, stream limit %d", p, limit)
	}
	// The budget closes after about 50 early resets, well before 10k.
	if h := e.up.hits.Load(); h > 500 {
		t.Errorf("upstream saw %d attack requests", h)
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > baseline+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline+2 {
		t.Errorf("%d goroutines after the attack, %d before", n, baseline)
	}
}

// TestH2ResetsWithinBudget: a client that cancels a minority of its
// streams (gRPC deadlines, user navigation) keeps its connection.
func TestH2ResetsWithinBudget(t *testing.T) {
	h2LeakCheck(t)
	e := newAttackEnv(t, attackEnvOpts{})
	r := h2raw.Dial(t, e.addr, 0)
	for i := range 300 {
		id := uint32(2*i + 1)
		r.Headers(id, true, h2raw.GET("/ok")...)
		if i%3 == 0 { // a third reset at once
			_ = r.Framer.WriteRSTStream(id, http2.ErrCodeCancel)
			continue
		}
		if err := r.Flush(); err != nil {
			t.Fatal(err)
		}
		if a := r.Await(id, 5*time.Second); a.Status != "200" {
			t.Fatalf("stream %d: %+v", id, a)
		}
	}
}

// TestH2ContinuationFlood: a header block that never ends is cut off
// before the server read twice the header list limit, whatever the
// CONTINUATION frames carry.
func TestH2ContinuationFlood(t *testing.T) {
	h2LeakCheck(t)
	e := newAttackEnv(t, attackEnvOpts{})
	maxList := state.DefaultMaxRequestHeadersKB*1024 + 320
	// bufio read-ahead (16 KiB) and the preface/SETTINGS sit on top of
	// what the framer consumed.
	bound := int64(2*maxList + 16<<10 + 64)
	tests := []struct {
		name string
		frag func(r *h2raw.Conn, i int) []byte
	}{
		{"empty", func(*h2raw.Conn, int) []byte { return nil }},
		// 0x20 is an HPACK dynamic table size update to 0: it decodes to
		// nothing, so x/net's size accounting never moves.
		{"table size updates", func(*h2raw.Conn, int) []byte { return bytes.Repeat([]byte{0x20}, 8<<10) }},
		{"literal fields", func(r *h2raw.Conn, i int) []byte {
			return r.Block(fmt.Sprintf("x-pad-%d", i), strings.Repeat("a", 4000))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.read.Load()
			r := h2raw.Dial(t, e.addr, 0)
			_ = r.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.Block(h2raw.GET("/")...), EndStream: true})
			done := make(chan struct{})
			go func() {
				defer close(done)
				// Up to 10x the limit; a write fails once the server closed.
				for i, sent := 0, 0; sent < 10*maxList; i++ {
					f := tc.frag(r, i)
					if r.Framer.WriteContinuation(1, false, f) != nil || r.Flush() != nil {
						return
					}
					sent += 9 + len(f)
				}
			}()
			_, closed := r.AwaitClose(10 * time.Second)
			r.NetConn.Close()
			<-done
			if !closed {
				t.Fatal("connection still open")
			}
			if got := e.read.Load() - before; got > bound {
				t.Errorf("server read %d bytes before closing, bound %d (2x header list %d)", got, bound, maxList)
			}
		})
	}
}

// TestH2ControlFlood: a client that floods PING or SETTINGS and never
// reads the acks is disconnected, with the queued acks bounded.
func TestH2ControlFlood(t *testing.T) {
	h2LeakCheck(t)
	e := newAttackEnv(t, attackEnvOpts{})
	tests := []struct {
		name  string
		write func(r *h2raw.Conn) error
	}{
		{"ping", func(r *h2raw.Conn) error { return r.Framer.WritePing(false, [8]byte{1}) }},
		{"settings", func(r *h2raw.Conn) error {
			return r.Framer.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.read.Load()
			r := h2raw.Dial(t, e.addr, 4096)
			start := time.Now()
			var err error
			frames := 0
			for frames < 2_000_000 && err == nil && time.Since(start) < 20*time.Second {
				for range 1000 {
					_ = tc.write(r)
				}
				frames += 1000
				err = r.Flush()
			}
			if err == nil {
				t.Fatalf("%d frames in %v written, connection still open", frames, time.Since(start))
			}
			// 10k unflushed acks are the limit; what the server read
			// before noticing is bounded by the socket buffers.
			if got := e.read.Load() - before; got > 16<<20 {
				t.Errorf("server read %d bytes before closing", got)
			}
		})
	}
}

// TestH2DowngradeRejected: requests that an HTTP/1.1 upstream would read
// differently from us are refused (stream reset or 400), never forwarded.
func TestH2DowngradeRejected(t *testing.T) {
	h2LeakCheck(t)
	e := newAttackEnv(t, attackEnvOpts{})
	get := h2raw.GET("/")
	with := func(base []string, kv ...string) []string { return append(append([]string(nil), base...), kv...) }
	tests := []struct {
		name   string
		fields []string
		data   string // DATA after the HEADERS, ending the stream
		ok     bool   // the control case: must reach the upstream
	}{
		{name: "valid (control)", fields: get, ok: true},
		{name: "valid body (control)", fields: with(h2raw.GET("/"), "content-length", "3"), data: "abc", ok: true},
		{name: "transfer-encoding", fields: with(get, "transfer-encoding", "chunked"), data: "3\r\nabc\r\n0\r\n\r\n"},
		{name: "connection", fields: with(get, "connection", "keep-alive")},
		{name: "te not trailers", fields: with(get, "te", "gzip")},
		{name: "upgrade", fields: with(get, "upgrade", "websocket")},
		{name: "content-length longer than data", fields: with(get, "content-length", "10"), data: "abc"},
		{name: "content-length shorter than data", fields: with(get, "content-length", "1"), data: "abc"},
		{name: "content-length without data", fields: with(get, "content-length", "5")},
		{name: "content-length signed", fields: with(get, "content-length", "+3"), data: "abc"},
		{name: "two content-lengths", fields: with(get, "content-length", "3", "content-length", "3"), data: "abc"},
		{name: "CR in value", fields: with(get, "x-a", "a\rb")},
		{name: "LF in value", fields: with(get, "x-a", "a\nGET / HTTP/1.1")},
		{name: "NUL in value", fields: with(get, "x-a", "a\x00b")},
		{name: "CRLF in authority", fields: []string{":method", "GET", ":scheme", "http", ":authority", "a\r\nx: y", ":path", "/"}},
		{name: "space in authority", fields: []string{":method", "GET", ":scheme", "http", ":authority", "a b", ":path", "/"}},
		{name: "space in path", fields: []string{":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/x HTTP/1.1"}},
		{name: "space in method", fields: []string{":method", "GET /", ":scheme", "http", ":authority", "a", ":path", "/"}},
		{name: "upper-case name", fields: with(get, "X-Upper", "1")},
		{name: "host differs from authority", fields: with(get, "host", "other.example")},
		{name: "two hosts", fields: []string{":method", "GET", ":scheme", "http", ":path", "/", "host", "a", "host", "b"}},
		{name: "pseudo after regular", fields: []string{":method", "GET", "x-a", "1", ":scheme", "http", ":authority", "a", ":path", "/"}},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.up.hits.Load()
			r := h2raw.Dial(t, e.addr, 0)
			const id = 1
			r.Headers(id, tc.data == "", tc.fields...)
			if tc.data != "" {
				_ = r.Framer.WriteData(id, true, []byte(tc.data))
			}
			if err := r.Flush(); err != nil {
				t.Fatal(err)
			}
			a := r.Await(id, 5*time.Second)
			hits := e.up.hits.Load() - before
			if tc.ok {
				if a.Status != "200" || hits != 1 {
					t.Fatalf("case %d: answer %+v, upstream hits %d; want 200 and 1", i, a, hits)
				}
				return
			}
			if !(a.RST || a.GoAway || a.Closed || a.Status == "400") {
				t.Errorf("answer %+v, want stream reset or 400", a)
			}
			// Give a forwarded request time to show up.
			time.Sleep(20 * time.Millisecond)
			if hits := e.up.hits.Load() - before; hits != 0 {
				t.Errorf("forwarded upstream (%d requests)", hits)
			}
		})
	}
}

// TestH2HeaderLimits: header lists over max_request_headers_kb or
// max_headers_count get 431 and are not forwarded.
func TestH2HeaderLimits(t *testing.T) {
	h2LeakCheck(t)
	e := newAttackEnv(t, attackEnvOpts{hcm: &state.HTTPConnectionManager{MaxRequestHeadersKB: 8, MaxHeadersCount: 20}})
	many := h2raw.GET("/")
	for i := range 21 {
		many = append(many, fmt.Sprintf("x-h%d", i), "v")
	}
	tests := []struct {
		name   string
		fields []string
		status string
	}{
		{"within limits", append(h2raw.GET("/"), "x-a", strings.Repeat("a", 4000)), "200"},
		{"too large", append(h2raw.GET("/"), "x-a", strings.Repeat("a", 3000), "x-b", strings.Repeat("b", 3000), "x-c", strings.Repeat("c", 3000)), "431"},
		// One value longer than the whole list limit fails HPACK decoding
		// in x/net's framer: a connection error (COMPRESSION_ERROR).
		{"one field over the limit", append(h2raw.GET("/"), "x-a", strings.Repeat("a", 9000)), "goaway"},
		{"too many", many, "431"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := e.up.hits.Load()
			r := h2raw.Dial(t, e.addr, 0)
			r.Headers(1, true, tc.fields...)
			if err := r.Flush(); err != nil {
				t.Fatal(err)
			}
			a := r.Await(1, 5*time.Second)
			if tc.status == "goaway" && (a.GoAway || a.Closed) {
				a.Status = "goaway"
			}
			if a.Status != tc.status {
				t.Fatalf("answer %+v, want %s", a, tc.status)
			}
			if want := int64(0); tc.status == "200" {
				want = 1
				if got := e.up.hits.Load() - before; got != want {
					t.Errorf("upstream hits %d, want %d", got, want)
				}
			} else if got := e.up.hits.Load() - before; got != want {
				t.Errorf("upstream hits %d, want %d", got, want)
			}
		})
	}
}
