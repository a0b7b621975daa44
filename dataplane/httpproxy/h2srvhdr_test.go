package httpproxy

import (
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshlet/meshlet/internal/h2raw"
)

// TestH2ServerHeaderBlocks: what a client sees for malformed request
// header blocks, decoded by the server's own HPACK decoder: a stream error
// resets that stream and the connection serves the next one; a connection
// error ends the connection with GOAWAY and its code.
func TestH2ServerHeaderBlocks(t *testing.T) {
	h2LeakCheck(t)
	e := newAttackEnv(t, attackEnvOpts{})
	get := h2raw.GET("/ok")
	with := func(extra ...string) []string { return append(h2raw.GET("/ok"), extra...) }
	tests := []struct {
		name string
		// send writes the frames of stream 1.
		send func(r *h2raw.Conn)
		// want: "200", "rst" (stream error, connection lives on) or
		// "goaway:CODE".
		want string
	}{
		{"plain request", func(r *h2raw.Conn) { r.Headers(1, true, get...) }, "200"},
		{"split over CONTINUATIONs", func(r *h2raw.Conn) {
			b := r.Block(with("x-a", strings.Repeat("a", 100))...)
			_ = r.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:5], EndStream: true})
			_ = r.Framer.WriteContinuation(1, false, nil)
			_ = r.Framer.WriteContinuation(1, false, b[5:40])
			_ = r.Framer.WriteContinuation(1, true, b[40:])
		}, "200"},
		{"NUL in a value", func(r *h2raw.Conn) { r.Headers(1, true, with("x-a", "a\x00b")...) }, "rst"},
		{"CR LF in a value", func(r *h2raw.Conn) { r.Headers(1, true, with("x-a", "a\r\nx-b: c")...) }, "rst"},
		{"upper-case field name", func(r *h2raw.Conn) { r.Headers(1, true, with("X-A", "b")...) }, "rst"},
		{"space in a field name", func(r *h2raw.Conn) { r.Headers(1, true, with("x a", "b")...) }, "rst"},
		{"pseudo field after a regular one", func(r *h2raw.Conn) {
			r.Headers(1, true, ":method", "GET", ":scheme", "http", "x-a", "b", ":path", "/ok", ":authority", "a")
		}, "rst"},
		{"unknown pseudo field", func(r *h2raw.Conn) { r.Headers(1, true, with(":foo", "bar")...) }, "rst"},
		{"duplicate :path", func(r *h2raw.Conn) {
			r.Headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/ok", ":path", "/ok", ":authority", "a")
		}, "rst"},
		{":status in a request", func(r *h2raw.Conn) {
			r.Headers(1, true, ":status", "200", ":method", "GET", ":scheme", "http", ":path", "/ok", ":authority", "a")
		}, "rst"},
		{":protocol without extended CONNECT", func(r *h2raw.Conn) {
			r.Headers(1, true, ":method", "GET", ":scheme", "http", ":path", "/ok", ":authority", "a", ":protocol", "websocket")
		}, "rst"},
		{"no :path", func(r *h2raw.Conn) { r.Headers(1, true, ":method", "GET", ":scheme", "http", ":authority", "a") }, "rst"},
		{"connection-specific field", func(r *h2raw.Conn) { r.Headers(1, true, with("connection", "close")...) }, "rst"},
		{"te other than trailers", func(r *h2raw.Conn) { r.Headers(1, true, with("te", "gzip")...) }, "rst"},
		{"CONTINUATION after an invalid field", func(r *h2raw.Conn) {
			b := r.Block(with("x-a", "a\x00b")...)
			_ = r.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b, EndStream: true})
			_ = r.Framer.WriteContinuation(1, true, r.Block("x-b", "c"))
		}, "goaway:PROTOCOL_ERROR"},
		{"HPACK garbage", func(r *h2raw.Conn) {
			_ = r.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, EndStream: true, EndHeaders: true})
		}, "goaway:COMPRESSION_ERROR"},
		{"HPACK block cut short", func(r *h2raw.Conn) {
			b := r.Block(with("x-a", strings.Repeat("a", 50))...)
			_ = r.Framer.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:len(b)-10], EndStream: true, EndHeaders: true})
		}, "goaway:COMPRESSION_ERROR"},
		{"trailers", func(r *h2raw.Conn) {
			r.Headers(1, false, with("content-type", "text/plain")...)
			_ = r.Framer.WriteData(1, false, []byte("body"))
			r.Headers(1, true, "x-checksum", "abc")
		}, "200"},
		{"trailers with a pseudo field", func(r *h2raw.Conn) {
			r.Headers(1, false, get...)
			_ = r.Framer.WriteData(1, false, []byte("body"))
			r.Headers(1, true, ":path", "/x")
		}, "rst"},
		{"trailers without END_STREAM", func(r *h2raw.Conn) {
			r.Headers(1, false, get...)
			_ = r.Framer.WriteData(1, false, []byte("body"))
			r.Headers(1, false, "x-checksum", "abc")
		}, "rst"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := h2raw.Dial(t, e.addr, 0)
			tc.send(r)
			if err := r.Flush(); err != nil {
				t.Fatal(err)
			}
			a := r.Await(1, 5*time.Second)
			got := a.Status
			switch {
			case a.RST:
				got = "rst"
			case a.GoAway:
				got = "goaway:" + a.GoAwayErr.String()
			case a.Closed:
				got = "closed"
			}
			if got != tc.want {
				t.Fatalf("answer %q (%+v), want %q", got, a, tc.want)
			}
			if strings.HasPrefix(tc.want, "goaway") {
				return
			}
			// The connection, and its HPACK state, serve the next stream.
			r.Headers(3, true, with("x-after", "1")...)
			if err := r.Flush(); err != nil {
				t.Fatal(err)
			}
			if a := r.Await(3, 5*time.Second); a.Status != "200" {
				t.Fatalf("next stream: answer %+v, want 200", a)
			}
		})
	}
}

// TestParseH2Path: the allocation-free parse gives what
// url.ParseRequestURI gives, errors included.
func TestParseH2Path(t *testing.T) {
	paths := []string{
		"/", "/a/b/c", "/a?b=c", "/a?", "/a??", "/a?b?c", "/?", "/?x", "/a;b,c:d@e$f&g+h=i~j.k_l-m",
		"/%41", "/a%2Fb", "/a%zz", "/a b", "/a#frag", "/a?b#c", "//x/y", "//", "///a", "*", "",
		"a/b", "http://h/p", "/é", "/a!b", "/a*b", "/a'b", "/a(b)", "/a[b]", "/a|b", "/a\"b", "/a{b}",
		"/a^b", "/a`b", "/a\\b", "/a<b>", "/a%", "/a?%zz", "?q", "/a/../b", "/./a",
	}
	for c := 0x21; c < 0x7f; c++ {
		paths = append(paths, fmt.Sprintf("/p%cq", c), fmt.Sprintf("/p?q%c", c))
	}
	for _, p := range paths {
		want, werr := url.ParseRequestURI(p)
		var u url.URL
		got, gerr := parseH2Path(p, &u)
		if (werr != nil) != (gerr != nil) {
			t.Errorf("%q: error %v, url.ParseRequestURI's %v", p, gerr, werr)
			continue
		}
		if werr != nil {
			continue
		}
		if !reflect.DeepEqual(*got, *want) {
			t.Errorf("%q: %#v, url.ParseRequestURI's %#v", p, *got, *want)
		}
		if got.String() != want.String() || got.RequestURI() != want.RequestURI() {
			t.Errorf("%q: prints %q %q, want %q %q", p, got.String(), got.RequestURI(), want.String(), want.RequestURI())
		}
	}
}

// TestLookupCanonical: a lower-case (or any-case) name finds the canonical
// key, like indexing with textproto.CanonicalMIMEHeaderKey.
func TestLookupCanonical(t *testing.T) {
	h := http.Header{
		"Grpc-Timeout":                   {"1S"},
		"X-Envoy-Upstream-Rq-Timeout-Ms": {"5"},
		"Content-Type":                   {"a", "b"},
		"x weird":                        {"raw"},
		"Ünicode":                        {"u"},
		strings.Repeat("A", 70):          {"long"},
	}
	names := []string{
		"grpc-timeout", "GRPC-TIMEOUT", "Grpc-Timeout", "x-envoy-upstream-rq-timeout-ms", "content-type",
		"x weird", "X Weird", "ünicode", "Ünicode", "missing", "", strings.Repeat("a", 70), "-a", "a--b",
	}
	for _, name := range names {
		want, wok := h[textproto.CanonicalMIMEHeaderKey(name)]
		got, ok := lookupCanonical(h, name)
		if ok != wok || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: %v %v, want %v %v", name, got, ok, want, wok)
		}
	}
}
