package httpproxy

import (
	"errors"
	"io"
	"strings"
	"testing"
)

// readRequestHead runs the downstream head path (readHead + parse) on raw.
func readRequestHead(raw string, maxKB, maxHeaders int) (*h1Request, *h1Reader, error) {
	br := &h1Reader{}
	br.reset(strings.NewReader(raw), 64)
	n, _, err := br.readHead(maxKB<<10, errHeadersTooLarge)
	if err != nil {
		return nil, br, err
	}
	r := &h1Request{}
	err = r.parse(br.buf[br.r:br.r+n], maxHeaders)
	br.discard(n)
	return r, br, err
}

func statusOf(err error) int {
	var he *h1Error
	if errors.As(err, &he) {
		return he.status
	}
	if err != nil {
		return -1
	}
	return 0
}

func TestParseRequestStrictness(t *testing.T) {
	big := strings.Repeat("a", 2<<10)
	many := strings.Repeat("x-h: 1\r\n", 101)
	tests := []struct {
		name   string
		raw    string
		status int // 0 = accepted
	}{
		{"simple", "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"leading CRLF tolerated", "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"http/1.0 without host", "GET / HTTP/1.0\r\n\r\n", 0},
		{"missing host", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"differing CLs", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
		{"differing CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n", 400},
		{"identical CLs", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 0},
		{"signed CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n", 400},
		{"hex CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\n", 400},
		{"empty CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400},
		{"huge CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
		{"TE chunked not last", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400},
		{"TE gzip only", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
		{"TE gzip then chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
		{"TE chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
		{"TE identity", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 400},
		{"TE mixed case ok", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ChUnKeD\r\n\r\n", 0},
		{"space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
		{"tab before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400},
		{"empty header name", "GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400},
		{"bad header name char", "GET / HTTP/1.1\r\nHost: a\r\nX(y): v\r\n\r\n", 400},
		{"no colon", "GET / HTTP/1.1\r\nHost: a\r\nnocolon\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", 400},
		{"bare LF in header", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400},
		{"bare LF request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
		{"bare CR in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400},
		{"NUL in value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400},
		{"obs-text value ok", "GET / HTTP/1.1\r\nHost: a\r\nX: caf\xc3\xa9\r\n\r\n", 0},
		{"double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"trailing space", "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400},
		{"lower version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400},
		{"HTTP/2.0 line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400},
		{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 400},
		{"bad method", "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"control in target", "GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"CONNECT authority form", "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", 400},
		{"asterisk OPTIONS", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 0},
		{"asterisk GET", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400},
		{"absolute form no host header", "GET http://h.example:8080/x?y HTTP/1.1\r\n\r\n", 0},
		{"too many headers", "GET / HTTP/1.1\r\nHost: a\r\n" + many + "\r\n", 431},
		{"head too large", "GET / HTTP/1.1\r\nHost: a\r\nX: " + big + "\r\n\r\n", 431},
		{"truncated", "GET / HTTP/1.1\r\nHost: a\r\n", -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := readRequestHead(tc.raw, 1, 100)
			if got := statusOf(err); got != tc.status {
				t.Fatalf("status %d (err %v), want %d", got, err, tc.status)
			}
		})
	}
}

func TestParseRequestFields(t *testing.T) {
	tests := []struct {
		name                   string
		raw                    string
		authority, path        string
		framing                framing
		cl                     int64
		keepAlive, expect, upg bool
	}{
		{"keep-alive default 1.1", "GET /a?b=c HTTP/1.1\r\nHost: Ex.com\r\n\r\n", "Ex.com", "/a?b=c", bodyNone, 0, true, false, false},
		{"close", "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", "a", "/", bodyNone, 0, false, false, false},
		{"1.0 default close", "GET / HTTP/1.0\r\nHost: a\r\n\r\n", "a", "/", bodyNone, 0, false, false, false},
		{"1.0 keep-alive", "GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n", "a", "/", bodyNone, 0, true, false, false},
		{"content-length", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", "a", "/", bodyLength, 5, true, false, false},
		{"content-length zero", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", "a", "/", bodyNone, 0, true, false, false},
		{"chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", "a", "/", bodyChunked, 0, true, false, false},
		{"expect", "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n", "a", "/", bodyLength, 1, true, true, false},
		{"websocket", "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n", "a", "/ws", bodyNone, 0, true, false, true},
		{"upgrade without connection token", "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", "a", "/ws", bodyNone, 0, true, false, false},
		{"absolute form wins over host", "GET http://abs.example:81/p HTTP/1.1\r\nHost: other\r\n\r\n", "abs.example:81", "/p", bodyNone, 0, true, false, false},
		{"absolute form empty path", "GET https://abs.example HTTP/1.1\r\n\r\n", "abs.example", "/", bodyNone, 0, true, false, false},
		{"absolute form query only", "GET http://abs.example?q=1 HTTP/1.1\r\n\r\n", "abs.example", "/?q=1", bodyNone, 0, true, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _, err := readRequestHead(tc.raw, 60, 100)
			if err != nil {
				t.Fatal(err)
			}
			if r.Authority() != tc.authority || r.Path() != tc.path {
				t.Errorf("authority %q path %q, want %q %q", r.Authority(), r.Path(), tc.authority, tc.path)
			}
			if r.framing != tc.framing || (tc.framing == bodyLength && r.contentLength != tc.cl) {
				t.Errorf("framing %d cl %d, want %d %d", r.framing, r.contentLength, tc.framing, tc.cl)
			}
			if r.keepAlive != tc.keepAlive || r.expectContinue != tc.expect || r.upgrade != tc.upg {
				t.Errorf("keepAlive %v expect %v upgrade %v, want %v %v %v",
					r.keepAlive, r.expectContinue, r.upgrade, tc.keepAlive, tc.expect, tc.upg)
			}
		})
	}
}

func TestRequestHeaderView(t *testing.T) {
	r, _, err := readRequestHead("GET /p HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nX-B:  sp  \r\n\r\n", 60, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ name, want string }{
		{"x-a", "1,2"}, {"x-b", "sp"}, {":authority", "h"}, {":path", "/p"}, {":method", "GET"}, {"host", "h"},
	} {
		if v, ok := r.Header(c.name); !ok || v != c.want {
			t.Errorf("Header(%q) = %q, %v; want %q", c.name, v, ok, c.want)
		}
	}
	if _, ok := r.Header("x-missing"); ok {
		t.Error("missing header reported present")
	}
}

// readBody decodes a whole body with framing f from raw.
func readBody(raw string, f framing, cl int64) (string, error) {
	br := &h1Reader{}
	br.reset(strings.NewReader(raw), 16)
	var b bodyReader
	b.reset(br, f, cl)
	var out []byte
	for {
		p, err := b.next()
		out = append(out, p...)
		if err == io.EOF {
			return string(out), nil
		}
		if err != nil {
			return string(out), err
		}
	}
}

func TestChunkedBody(t *testing.T) {
	tests := []struct {
		name, raw, want string
		ok              bool
	}{
		{"simple", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", true},
		{"extensions", "5;name=val;x\r\nhello\r\n0;last\r\n\r\n", "hello", true},
		{"extension with BWS", "5 ;a=\"q\"\r\nhello\r\n0\r\n\r\n", "hello", true},
		{"upper hex", "A\r\n0123456789\r\n0\r\n\r\n", "0123456789", true},
		{"trailers", "3\r\nabc\r\n0\r\nX-Trailer: v\r\nY: z\r\n\r\n", "abc", true},
		{"missing CRLF after data", "3\r\nabcX\r\n0\r\n\r\n", "abc", false},
		{"bare LF size line", "3\nabc\r\n0\r\n\r\n", "", false},
		{"no digits", ";x\r\nabc\r\n0\r\n\r\n", "", false},
		{"junk after size", "3x\r\nabc\r\n0\r\n\r\n", "", false},
		{"overflow", "fffffffffffffffff\r\n", "", false},
		{"negative", "-1\r\n", "", false},
		{"bad trailer", "0\r\nbad trailer\r\n\r\n", "", false},
		{"obs-fold trailer", "0\r\nX: a\r\n b\r\n\r\n", "", false},
		{"truncated", "5\r\nhel", "hel", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readBody(tc.raw, bodyChunked, 0)
			if (err == nil) != tc.ok || got != tc.want {
				t.Fatalf("got %q, %v; want %q ok=%v", got, err, tc.want, tc.ok)
			}
		})
	}
}

func TestLengthAndCloseBody(t *testing.T) {
	if got, err := readBody("hello world, and more", bodyLength, 11); err != nil || got != "hello world" {
		t.Fatalf("length body %q %v", got, err)
	}
	if _, err := readBody("short", bodyLength, 11); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("truncated length body: %v", err)
	}
	if got, err := readBody("until close", bodyClose, 0); err != nil || got != "until close" {
		t.Fatalf("close body %q %v", got, err)
	}
}

func TestPipelinedRequestsParseInOrder(t *testing.T) {
	raw := "POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc" +
		"POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nde\r\n0\r\n\r\n" +
		"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"
	br := &h1Reader{}
	br.reset(strings.NewReader(raw), 32)
	var paths, bodies []string
	for i := 0; i < 3; i++ {
		n, _, err := br.readHead(60<<10, errHeadersTooLarge)
		if err != nil {
			t.Fatal(err)
		}
		var r h1Request
		if err := r.parse(br.buf[br.r:br.r+n], 100); err != nil {
			t.Fatal(err)
		}
		br.discard(n)
		var b bodyReader
		b.reset(br, r.framing, r.contentLength)
		var body []byte
		for {
			p, err := b.next()
			body = append(body, p...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		paths = append(paths, r.Path())
		bodies = append(bodies, string(body))
	}
	if strings.Join(paths, " ") != "/1 /2 /3" || strings.Join(bodies, "|") != "abc|de|" {
		t.Fatalf("paths %v bodies %q", paths, bodies)
	}
}

func TestParseResponse(t *testing.T) {
	tests := []struct {
		name    string
		raw     string
		head    bool
		ok      bool
		framing framing
		keep    bool
	}{
		{"length", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false, true, bodyLength, true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, true, bodyChunked, true},
		{"close delimited", "HTTP/1.1 200 OK\r\n\r\n", false, true, bodyClose, false},
		{"204", "HTTP/1.1 204 No Content\r\n\r\n", false, true, bodyNone, true},
		{"HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true, true, bodyNone, true},
		{"1.0", "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, true, bodyLength, false},
		{"both CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", false, true, bodyChunked, false},
		{"no reason", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false, true, bodyNone, true},
		{"bad code", "HTTP/1.1 2x0 OK\r\n\r\n", false, false, 0, false},
		{"bad version", "HTTX/1.1 200 OK\r\n\r\n", false, false, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r h1Response
			err := r.parse([]byte(tc.raw), tc.head)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v", err)
			}
			if tc.ok && (r.framing != tc.framing || r.keepAlive != tc.keep) {
				t.Fatalf("framing %d keep %v, want %d %v", r.framing, r.keepAlive, tc.framing, tc.keep)
			}
		})
	}
}

func TestWriterChunkedRoundTrip(t *testing.T) {
	var sb strings.Builder
	var w h1Writer
	w.reset(&sb, 8)
	w.writeChunk([]byte("hello"))
	w.writeChunk([]byte(strings.Repeat("x", 300)))
	w.writeString("0\r\n\r\n")
	if err := w.flush(); err != nil {
		t.Fatal(err)
	}
	got, err := readBody(sb.String(), bodyChunked, 0)
	if err != nil || got != "hello"+strings.Repeat("x", 300) {
		t.Fatalf("round trip %q %v", got, err)
	}
}

// FuzzParseRequest checks that the request parser never panics and that
// whatever it accepts has consistent framing.
func FuzzParseRequest(f *testing.F) {
	for _, s := range []string{
		"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
		"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
		"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;e=1\r\nabc\r\n0\r\nT: v\r\n\r\n",
		"GET http://h:1/p?q HTTP/1.1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		r, br, err := readRequestHead(raw, 8, 100)
		if err != nil {
			return
		}
		if r.framing == bodyLength && r.contentLength <= 0 {
			t.Fatalf("length framing with cl %d", r.contentLength)
		}
		if r.minor == 1 && len(r.authority) == 0 && r.hdr.has("host") == false && !hasPrefixFold(r.target, "http") {
			t.Fatal("HTTP/1.1 request accepted without host")
		}
		var b bodyReader
		b.reset(br, r.framing, r.contentLength)
		for i := 0; i < 1000; i++ {
			if _, err := b.next(); err != nil {
				return
			}
		}
	})
}
