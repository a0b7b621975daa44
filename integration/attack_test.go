package integration

import (
	"bufio"
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

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"golang.org/x/net/http2"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/meshlet/meshlet/internal/h2raw"
)

// Hostile clients against the real binary (issue 6, "Overload and
// limits"): raw HTTP/2 framing and raw HTTP/1.1 bytes, with a recording
// upstream that tells whether anything got through.

func oneCluster(t *testing.T, hold time.Duration) (*recordingUpstream, []*routev3.VirtualHost, map[string]*recordingUpstream) {
	u := startRecorder(t, "be", hold)
	return u, []*routev3.VirtualHost{vhost(routeTo("be"))}, map[string]*recordingUpstream{"be": u}
}

// Rapid reset (CVE-2023-44487): 10k HEADERS+RST_STREAM on one connection.
func TestAttackH2RapidReset(t *testing.T) {
	const limit = 16
	up, vhs, ups := oneCluster(t, 50*time.Millisecond)
	m := startAttackMesh(t, func(h *hcmv3.HttpConnectionManager) {
		h.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{MaxConcurrentStreams: wrapperspb.UInt32(limit)}
	}, vhs, ups)
	client := h2cClient()
	fetch := func() error {
		code, _, _, err := get(client, "http://"+m.listener+"/ok", nil)
		if err == nil && code != 200 {
			err = fmt.Errorf("status %d", code)
		}
		return err
	}
	if err := fetch(); err != nil {
		t.Fatal(err)
	}
	baseline := m.px.goroutines(t)
	hitsBefore := up.hits.Load()
	up.peak.Store(0)

	stop := make(chan struct{})
	served := make(chan error, 1)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				if n == 0 {
					served <- errors.New("no request completed during the attack")
				} else {
					served <- nil
				}
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
	r := h2raw.Dial(t, m.listener, 0)
	sent := 0
	var werr error
	for id := uint32(1); sent < 10000 && werr == nil; id += 2 {
		r.Headers(id, true, h2raw.GET("/attack")...)
		_ = r.Framer.WriteRSTStream(id, http2.ErrCodeCancel)
		if sent++; sent%100 == 0 {
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
		t.Fatalf("connection open after %d HEADERS+RST_STREAM", sent)
	}
	if code == nil || *code != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("GOAWAY %v, want ENHANCE_YOUR_CALM", code)
	}
	if p := up.peak.Load(); p > limit {
		t.Errorf("upstream saw %d requests at once, stream limit %d", p, limit)
	}
	if h := up.hits.Load() - hitsBefore; h > 1000 {
		t.Errorf("upstream saw %d requests", h)
	}
	client.CloseIdleConnections()
	var n int
	deadline := time.Now().Add(10 * time.Second)
	for n = m.px.goroutines(t); n > baseline+5 && time.Now().Before(deadline); n = m.px.goroutines(t) {
		time.Sleep(50 * time.Millisecond)
	}
	if n > baseline+5 {
		t.Errorf("proxy has %d goroutines after the attack, %d before", n, baseline)
	}
}

// A CONTINUATION flood is cut off before twice the header list limit
// (max_request_headers_kb + HPACK overhead) was read: the client sends
// exactly that much, and the connection must close.
func TestAttackH2ContinuationFlood(t *testing.T) {
	up, vhs, ups := oneCluster(t, 0)
	m := startAttackMesh(t, func(h *hcmv3.HttpConnectionManager) {
		h.MaxRequestHeadersKb = wrapperspb.UInt32(16)
	}, vhs, ups)
	maxList := 16*1024 + 320
	for _, kind := range []string{"empty", "literal"} {
		t.Run(kind, func(t *testing.T) {
			r := h2raw.Dial(t, m.listener, 0)
			first := r.Block(h2raw.GET("/")...)
			_ = r.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true})
			sent := 9 + len(first)
			for i := 0; sent < 2*maxList; i++ {
				var frag []byte
				if kind == "literal" {
					frag = r.Block(fmt.Sprintf("x-%d", i), strings.Repeat("v", 1000))
				}
				if n := 2*maxList - sent - 9; len(frag) > n {
					frag = frag[:max(n, 0)]
				}
				_ = r.Framer.WriteContinuation(1, false, frag)
				sent += 9 + len(frag)
				if r.Flush() != nil {
					break
				}
			}
			_ = r.Flush()
			if _, closed := r.AwaitClose(5 * time.Second); !closed {
				t.Fatalf("connection open after %d header block bytes (limit %d)", sent, maxList)
			}
			if up.sawPath("/") && up.hits.Load() > 1 {
				t.Error("flooded request reached the upstream")
			}
		})
	}
}

// PING and SETTINGS floods from a client that never reads: the proxy
// closes the connection and its memory stays bounded.
func TestAttackH2ControlFlood(t *testing.T) {
	_, vhs, ups := oneCluster(t, 0)
	m := startAttackMesh(t, nil, vhs, ups)
	rss0 := m.px.rssKB(t)
	for _, kind := range []string{"ping", "settings"} {
		t.Run(kind, func(t *testing.T) {
			r := h2raw.Dial(t, m.listener, 4096)
			start := time.Now()
			var err error
			frames := 0
			for frames < 2_000_000 && err == nil && time.Since(start) < 20*time.Second {
				for range 1000 {
					if kind == "ping" {
						_ = r.Framer.WritePing(false, [8]byte{7})
					} else {
						_ = r.Framer.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
					}
				}
				frames += 1000
				err = r.Flush()
			}
			if err == nil {
				t.Fatalf("%d frames written in %v, connection still open", frames, time.Since(start))
			}
		})
	}
	if grew := m.px.rssKB(t) - rss0; grew > 64<<10 {
		t.Errorf("proxy RSS grew by %d KiB during the floods", grew)
	}
	if code, _, _, err := get(h2cClient(), "http://"+m.listener+"/after", nil); err != nil || code != 200 {
		t.Errorf("after the floods: %d %v", code, err)
	}
}

// h1Exchange sends raw on a fresh connection and returns the first
// response's status (0 when the proxy closed without answering).
func h1Exchange(t *testing.T, addr, raw string) int {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// Drain whatever else comes (a desync would answer twice).
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, _ = io.Copy(io.Discard, br)
	return resp.StatusCode
}

// The HTTP/1.1 request smuggling matrix: each ambiguous framing is either
// refused with 400 or reaches the upstream as exactly one request; the
// smuggled request behind it never does.
func TestAttackH1Smuggling(t *testing.T) {
	up, vhs, ups := oneCluster(t, 0)
	m := startAttackMesh(t, nil, vhs, ups)
	const smuggled = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
	tests := []struct {
		name, head, body string
		valid            bool // control: must be one upstream request
	}{
		{"valid chunked (control)", "Transfer-Encoding: chunked\r\n", "3\r\nabc\r\n0\r\n\r\n", true},
		{"valid length (control)", "Content-Length: 3\r\n", "abc", true},
		{"CL and TE", "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" + smuggled, false},
		{"TE and CL", "Transfer-Encoding: chunked\r\nContent-Length: 40\r\n", "0\r\n\r\n" + smuggled, false},
		{"TE chunked, identity", "Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n" + smuggled, false},
		{"TE identity, chunked twice", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" + smuggled, false},
		{"TE CR chunked", "Transfer-Encoding: \rchunked\r\n", "0\r\n\r\n" + smuggled, false},
		{"TE xchunked", "Transfer-Encoding: xchunked\r\n", "0\r\n\r\n" + smuggled, false},
		{"TE tab chunked", "Transfer-Encoding:\tchunked\r\n", "0\r\n\r\n", true},
		{"duplicate differing CL", "Content-Length: 0\r\nContent-Length: 36\r\n", smuggled, false},
		{"CL list differing", "Content-Length: 0, 36\r\n", smuggled, false},
		{"CL signed", "Content-Length: +36\r\n", smuggled, false},
		{"CL hex", "Content-Length: 0x24\r\n", smuggled, false},
		{"bare LF in chunk size", "Transfer-Encoding: chunked\r\n", "3\nabc\r\n0\r\n\r\n" + smuggled, false},
		{"chunk size overflow", "Transfer-Encoding: chunked\r\n", "10000000000000003\r\nabc\r\n0\r\n\r\n" + smuggled, false},
		{"chunk data longer than size", "Transfer-Encoding: chunked\r\n", "1\r\nabc\r\n0\r\n\r\n" + smuggled, false},
		{"space before colon", "Transfer-Encoding : chunked\r\nContent-Length: 36\r\n", smuggled, false},
		{"obs-fold", "Transfer-Encoding: identity\r\n chunked\r\n", "0\r\n\r\n" + smuggled, false},
		{"bare LF in header", "X-A: 1\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n" + smuggled, false},
		{"NUL in value", "X-A: a\x00b\r\n", "", false},
		{"space in host", "", "", false}, // the Host line below carries it
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := up.hits.Load()
			host := "Host: a\r\n"
			if tc.name == "space in host" {
				host = "Host: a b\r\n"
			}
			status := h1Exchange(t, m.listener, "POST /req HTTP/1.1\r\n"+host+tc.head+"\r\n"+tc.body)
			time.Sleep(30 * time.Millisecond)
			hits := up.hits.Load() - before
			if tc.valid {
				if status != 200 || hits != 1 {
					t.Fatalf("control: status %d, upstream requests %d", status, hits)
				}
				return
			}
			if !(status == 400 && hits == 0) && !(status != 0 && hits == 1) {
				t.Errorf("status %d, upstream requests %d: want 400, or one request", status, hits)
			}
			if up.sawPath("/smuggled") {
				t.Fatal("the smuggled request reached the upstream")
			}
		})
	}
}

// HTTP/2 requests an HTTP/1.1 upstream would frame differently are reset
// (or answered 400) and never forwarded.
func TestAttackH2Downgrade(t *testing.T) {
	up, vhs, ups := oneCluster(t, 0)
	m := startAttackMesh(t, nil, vhs, ups)
	with := func(kv ...string) []string { return append(h2raw.GET("/down"), kv...) }
	tests := []struct {
		name   string
		fields []string
		data   string
		valid  bool
	}{
		{"valid (control)", with("content-length", "3"), "abc", true},
		{"transfer-encoding", with("transfer-encoding", "chunked"), "3\r\nabc\r\n0\r\n\r\n", false},
		{"content-length over data", with("content-length", "10"), "abc", false},
		{"content-length under data", with("content-length", "1"), "abc", false},
		{"content-length, no data", with("content-length", "7"), "", false},
		{"CR in value", with("x-a", "a\rb"), "", false},
		{"LF in value", with("x-a", "a\nx-b: c"), "", false},
		{"NUL in value", with("x-a", "a\x00b"), "", false},
		{"space in path", []string{":method", "GET", ":scheme", "http", ":authority", "a", ":path", "/a HTTP/1.1"}, "", false},
		{"host differs from authority", with("host", "elsewhere"), "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := up.hits.Load()
			r := h2raw.Dial(t, m.listener, 0)
			r.Headers(1, tc.data == "", tc.fields...)
			if tc.data != "" {
				_ = r.Framer.WriteData(1, true, []byte(tc.data))
			}
			if err := r.Flush(); err != nil {
				t.Fatal(err)
			}
			a := r.Await(1, 5*time.Second)
			time.Sleep(30 * time.Millisecond)
			hits := up.hits.Load() - before
			if tc.valid {
				if a.Status != "200" || hits != 1 {
					t.Fatalf("control: %+v, upstream requests %d", a, hits)
				}
				return
			}
			if !(a.RST || a.GoAway || a.Closed || a.Status == "400") || hits != 0 {
				t.Errorf("answer %+v, upstream requests %d: want reset or 400, nothing forwarded", a, hits)
			}
		})
	}
}

// Header size and count limits answer 431 on both codecs.
func TestAttackHeaderLimits(t *testing.T) {
	up, vhs, ups := oneCluster(t, 0)
	m := startAttackMesh(t, func(h *hcmv3.HttpConnectionManager) {
		h.MaxRequestHeadersKb = wrapperspb.UInt32(8)
		h.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxHeadersCount: wrapperspb.UInt32(20)}
	}, vhs, ups)
	var many strings.Builder
	for i := range 25 {
		fmt.Fprintf(&many, "X-H%d: v\r\n", i)
	}
	big := "X-Big: " + strings.Repeat("a", 3000) + "\r\nX-Big2: " + strings.Repeat("b", 3000) + "\r\nX-Big3: " + strings.Repeat("c", 3000) + "\r\n"
	h1 := []struct {
		name, head string
		status     int
	}{
		{"within", "X-A: " + strings.Repeat("a", 4000) + "\r\n", 200},
		{"too large", big, 431},
		{"too many", many.String(), 431},
	}
	for _, tc := range h1 {
		t.Run("http1/"+tc.name, func(t *testing.T) {
			before := up.hits.Load()
			if got := h1Exchange(t, m.listener, "GET / HTTP/1.1\r\nHost: a\r\n"+tc.head+"\r\n"); got != tc.status {
				t.Errorf("status %d, want %d", got, tc.status)
			}
			if hits := up.hits.Load() - before; (hits == 1) != (tc.status == 200) {
				t.Errorf("upstream requests %d", hits)
			}
		})
	}
	manyH2 := h2raw.GET("/")
	for i := range 25 {
		manyH2 = append(manyH2, fmt.Sprintf("x-h%d", i), "v")
	}
	h2 := []struct {
		name   string
		fields []string
		status string
	}{
		{"within", append(h2raw.GET("/"), "x-a", strings.Repeat("a", 4000)), "200"},
		{"too large", append(h2raw.GET("/"), "x-big", strings.Repeat("a", 3000), "x-big2", strings.Repeat("b", 3000), "x-big3", strings.Repeat("c", 3000)), "431"},
		{"too many", manyH2, "431"},
	}
	for _, tc := range h2 {
		t.Run("http2/"+tc.name, func(t *testing.T) {
			before := up.hits.Load()
			r := h2raw.Dial(t, m.listener, 0)
			r.Headers(1, true, tc.fields...)
			if err := r.Flush(); err != nil {
				t.Fatal(err)
			}
			if a := r.Await(1, 5*time.Second); a.Status != tc.status {
				t.Errorf("answer %+v, want %s", a, tc.status)
			}
			if hits := up.hits.Load() - before; (hits == 1) != (tc.status == "200") {
				t.Errorf("upstream requests %d", hits)
			}
		})
	}
}

// Slowloris: 1000 connections trickling a request head are closed once
// request_headers_timeout passes, while a normal client is served.
func TestAttackSlowloris(t *testing.T) {
	const (
		conns   = 1000
		timeout = time.Second
	)
	_, vhs, ups := oneCluster(t, 0)
	m := startAttackMesh(t, func(h *hcmv3.HttpConnectionManager) {
		h.RequestHeadersTimeout = durationpb.New(timeout)
	}, vhs, ups)
	var wg sync.WaitGroup
	var closedOK, late, failed atomic.Int64
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", m.listener, 5*time.Second)
			if err != nil {
				failed.Add(1)
				return
			}
			defer c.Close()
			head := fmt.Sprintf("GET /slow/%d HTTP/1.1\r\nHost: a\r\nX-Slow: %s", i, strings.Repeat("z", 100))
			start := time.Now()
			buf := make([]byte, 512)
			for j := 0; j < len(head) && time.Since(start) < 5*time.Second; j++ {
				if _, err := c.Write([]byte{head[j]}); err != nil {
					break
				}
				_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := c.Read(buf); err != nil {
					var ne net.Error
					if errors.As(err, &ne) && ne.Timeout() {
						continue
					}
				}
				break // answered (408) or closed
			}
			switch took := time.Since(start); {
			case took < timeout-100*time.Millisecond:
				failed.Add(1)
			case took > timeout+2*time.Second:
				late.Add(1)
			default:
				closedOK.Add(1)
			}
		}()
	}
	// A normal client meanwhile.
	client := h1Client()
	for i := range 20 {
		if code, _, _, err := get(client, "http://"+m.listener+fmt.Sprintf("/normal/%d", i), nil); err != nil || code != 200 {
			t.Errorf("normal request %d: %d %v", i, code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	if closedOK.Load() != conns {
		t.Errorf("of %d slow connections: %d closed on time, %d late, %d early or failed", conns, closedOK.Load(), late.Load(), failed.Load())
	}
}

// HTTP/2 slowloris: connections that trickle a header block (CONTINUATIONs
// that never end it, or a HEADERS payload a byte at a time) are closed once
// request_headers_timeout passes, while a normal h2c client is served.
func TestAttackSlowlorisH2(t *testing.T) {
	const (
		conns   = 200
		timeout = time.Second
	)
	_, vhs, ups := oneCluster(t, 0)
	m := startAttackMesh(t, func(h *hcmv3.HttpConnectionManager) {
		h.RequestHeadersTimeout = durationpb.New(timeout)
	}, vhs, ups)
	raws := make([]*h2raw.Conn, conns)
	for i := range raws {
		raws[i] = h2raw.Dial(t, m.listener, 0)
	}
	var wg sync.WaitGroup
	var closedOK, late, early atomic.Int64
	for i, r := range raws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			block := r.Block(h2raw.GET(fmt.Sprintf("/slow/%d", i))...)
			start := time.Now()
			stop := make(chan struct{})
			go func() { // the trickle; ends when the server closes
				tick := time.NewTicker(100 * time.Millisecond)
				defer tick.Stop()
				if i%2 == 0 {
					_ = r.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block, EndStream: true})
				} else {
					// Frame header of a complete block, payload withheld.
					_, _ = r.Writer.Write([]byte{0, 0, byte(len(block)), byte(http2.FrameHeaders), byte(http2.FlagHeadersEndHeaders | http2.FlagHeadersEndStream), 0, 0, 0, 1})
				}
				for j := 0; r.Flush() == nil && j < 50; j++ {
					select {
					case <-stop:
						return
					case <-tick.C:
					}
					if i%2 == 0 {
						_ = r.Framer.WriteContinuation(1, false, nil)
					} else if j < len(block)-1 {
						_ = r.Writer.WriteByte(block[j])
					}
				}
			}()
			_, closed := r.AwaitClose(timeout + 3*time.Second)
			close(stop)
			switch took := time.Since(start); {
			case !closed || took > timeout+2*time.Second:
				late.Add(1)
			case took < timeout-100*time.Millisecond:
				early.Add(1)
			default:
				closedOK.Add(1)
			}
		}()
	}
	client := h2cClient()
	for i := range 20 {
		if code, _, _, err := get(client, "http://"+m.listener+fmt.Sprintf("/normal/%d", i), nil); err != nil || code != 200 {
			t.Errorf("normal request %d: %d %v", i, code, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	wg.Wait()
	if closedOK.Load() != conns {
		t.Errorf("of %d slow connections: %d closed on time, %d late, %d early", conns, closedOK.Load(), late.Load(), early.Load())
	}
	for name, u := range ups {
		for i := range conns {
			if u.sawPath(fmt.Sprintf("/slow/%d", i)) {
				t.Errorf("upstream %s saw the unfinished request /slow/%d", name, i)
			}
		}
	}
}

// Host confusion: the authority routes the same way whichever way it is
// spelled (case, absolute-form, :authority, host) on both codecs; a
// trailing dot or another port is a different name, as in Envoy (exact
// domains, no dot stripping).
func TestAttackHostConfusion(t *testing.T) {
	ups := map[string]*recordingUpstream{
		"exact":    startRecorder(t, "exact", 0),
		"withport": startRecorder(t, "withport", 0),
		"default":  startRecorder(t, "default", 0),
	}
	vh := func(name string, domains ...string) *routev3.VirtualHost {
		return &routev3.VirtualHost{Name: name, Domains: domains, Routes: []*routev3.Route{routeTo(name)}}
	}
	m := startAttackMesh(t, nil, []*routev3.VirtualHost{
		vh("exact", "app.example.com"),
		vh("withport", "app.example.com:8080"),
		vh("default", "*"),
	}, ups)
	backendOf := func(t *testing.T, status int, body string) string {
		t.Helper()
		if status != 200 {
			return fmt.Sprintf("status %d", status)
		}
		name, _, _ := strings.Cut(body, " ")
		return name
	}
	h1 := func(t *testing.T, target, host string) string {
		c, err := net.DialTimeout("tcp", m.listener, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, host)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return backendOf(t, resp.StatusCode, string(b))
	}
	h2 := func(t *testing.T, authority, host string) string {
		r := h2raw.Dial(t, m.listener, 0)
		f := []string{":method", "GET", ":scheme", "http"}
		if authority != "" {
			f = append(f, ":authority", authority)
		}
		f = append(f, ":path", "/")
		if host != "" {
			f = append(f, "host", host)
		}
		r.Headers(1, true, f...)
		_ = r.Flush()
		a := r.Await(1, 5*time.Second)
		if a.Status != "200" {
			return fmt.Sprintf("answer %+v", a)
		}
		// The body names the backend.
		_ = r.NetConn.SetReadDeadline(time.Now().Add(5 * time.Second))
		for {
			fr, err := r.Framer.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			if d, ok := fr.(*http2.DataFrame); ok && d.StreamID == 1 {
				return backendOf(t, 200, string(d.Data()))
			}
		}
	}
	tests := []struct {
		name string
		do   func(t *testing.T) string
		want string
	}{
		{"h1 host", func(t *testing.T) string { return h1(t, "/", "app.example.com") }, "exact"},
		{"h1 host upper case", func(t *testing.T) string { return h1(t, "/", "APP.Example.COM") }, "exact"},
		{"h1 host with port", func(t *testing.T) string { return h1(t, "/", "app.example.com:8080") }, "withport"},
		{"h1 host trailing dot", func(t *testing.T) string { return h1(t, "/", "app.example.com.") }, "default"},
		{"h1 absolute-form wins over host", func(t *testing.T) string { return h1(t, "http://app.example.com/", "other.example") }, "exact"},
		{"h1 absolute-form other host", func(t *testing.T) string { return h1(t, "http://other.example/", "app.example.com") }, "default"},
		{"h1 absolute-form with port", func(t *testing.T) string { return h1(t, "HTTP://APP.example.com:8080/x", "a") }, "withport"},
		{"h2 authority", func(t *testing.T) string { return h2(t, "app.example.com", "") }, "exact"},
		{"h2 authority upper case", func(t *testing.T) string { return h2(t, "App.Example.Com", "") }, "exact"},
		{"h2 authority with port", func(t *testing.T) string { return h2(t, "app.example.com:8080", "") }, "withport"},
		{"h2 authority trailing dot", func(t *testing.T) string { return h2(t, "app.example.com.", "") }, "default"},
		{"h2 host only", func(t *testing.T) string { return h2(t, "", "app.example.com") }, "exact"},
		{"h2 host same as authority", func(t *testing.T) string { return h2(t, "app.example.com", "APP.example.com") }, "exact"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.do(t); got != tc.want {
				t.Errorf("routed to %s, want %s", got, tc.want)
			}
		})
	}
	// The upstream Host is the authority that was routed on.
	if !ups["exact"].sawPath("/") {
		t.Error("exact backend saw nothing")
	}
}
