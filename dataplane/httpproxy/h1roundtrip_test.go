package httpproxy

import (
	"bytes"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// TestWriteHTTPRequestFields checks the HTTP/1.1 head written for a request
// from the HTTP/2 path: names lower case, host from req.Host, hop-by-hop
// and framing fields dropped whatever their case.
func TestWriteHTTPRequestFields(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		want   []string // field lines expected after the host line, any order
	}{
		{"canonical keys lowered", http.Header{"X-Request-Id": {"a"}, "Content-Type": {"text/plain"}},
			[]string{"x-request-id: a", "content-type: text/plain"}},
		{"non-canonical keys lowered", http.Header{"x-MiXed": {"1", "2"}}, []string{"x-mixed: 1", "x-mixed: 2"}},
		{"hop-by-hop dropped", http.Header{"Connection": {"close"}, "keep-alive": {"1"}, "TE": {"trailers"},
			"Transfer-Encoding": {"chunked"}, "Upgrade": {"h2c"}, "Proxy-Connection": {"x"},
			"Content-Length": {"5"}, "Expect": {"100-continue"}, "Host": {"other"}, "Accept": {"*/*"}},
			[]string{"accept: */*"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			var w h1Writer
			w.reset(&out, 4096)
			req := &http.Request{Method: "GET", URL: h2URL("/p?q=1", "svc"), Host: "svc", Header: tc.header}
			if err := writeHTTPRequest(&w, req, false); err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(out.String(), "\r\n\r\n"), "\r\n")
			if lines[0] != "GET /p?q=1 HTTP/1.1" || lines[1] != "host: svc" {
				t.Fatalf("head = %q", lines[:2])
			}
			got := map[string]int{}
			for _, l := range lines[2:] {
				got[l]++
			}
			want := map[string]int{}
			for _, l := range tc.want {
				want[l]++
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("fields = %v, want %v", got, want)
			}
		})
	}
}

// TestH1ResponseHeader checks the conversion of an upstream response head
// to the http.Header the HTTP/2 client gets.
func TestH1ResponseHeader(t *testing.T) {
	tests := []struct {
		name string
		head string
		want http.Header
	}{
		{"common and rare names", "Content-Type: text/plain\r\nX-Custom-Thing: v\r\nDate: d\r\n\r\n",
			http.Header{"Content-Type": {"text/plain"}, "X-Custom-Thing": {"v"}, "Date": {"d"}}},
		{"repeated field keeps order", "Set-Cookie: a=1\r\nVary: x\r\nSet-Cookie: b=2\r\n\r\n",
			http.Header{"Set-Cookie": {"a=1", "b=2"}, "Vary": {"x"}}},
		{"hop-by-hop dropped", "Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nServer: s\r\n\r\n",
			http.Header{"Server": {"s"}}},
		{"fields named by Connection dropped", "Connection: X-Hop, close\r\nX-Hop: a\r\nX-Kept: b\r\n\r\n",
			http.Header{"X-Kept": {"b"}}},
		{"empty", "\r\n", http.Header{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var l hlist
			if err := parseHeaders([]byte(tc.head), &l, 0); err != nil {
				t.Fatal(err)
			}
			got := h1ResponseHeader(&l)
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("header = %v, want %v", got, tc.want)
			}
			// Appending to one field must not change another's values.
			for k := range got {
				got[k] = append(got[k], "extra")
			}
			for k, vs := range tc.want {
				if g := got[k]; !reflect.DeepEqual(g[:len(g)-1], vs) {
					t.Errorf("after append %s = %v, want %v + extra", k, g, vs)
				}
			}
		})
	}
}
