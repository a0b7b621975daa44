package httpproxy

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// trailerBackend answers chunked with an x-sum trailer, on HTTP/1.1 and
// h2c.
func trailerBackend(t *testing.T) string {
	return newH2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush() // no content-length: chunked on HTTP/1.1
		w.Header().Set("X-Sum", "42")
	}))
}

// An HTTP/2 client of an HTTP/1.1 upstream gets the upstream's chunked
// trailers when the cluster enables HTTP/1.1 trailers (Envoy's
// http_protocol_options.enable_trailers; off by default, then dropped).
func TestTrailersH2ClientH1Upstream(t *testing.T) {
	addr := trailerBackend(t)
	for _, on := range []bool{true, false} {
		cl := staticCluster("be", state.UpstreamHTTP1, addr)
		cl.HTTP1Trailers = on
		e := newH2Env(t, h2EnvOpts{clusters: []*state.Cluster{cl}, rc: routeAll("be")})
		client, _ := h2cClient(t)
		resp, err := client.Get("http://" + e.addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := ""
		if on {
			want = "42"
		}
		if string(body) != "body" || resp.Trailer.Get("X-Sum") != want {
			t.Fatalf("enable_trailers=%v: body %q trailer %v, want x-sum %q", on, body, resp.Trailer, want)
		}
	}
}

// HTTP/1.1 clients get trailers only when the connection manager enables
// them, and, from an HTTP/1.1 upstream, the cluster too.
func TestTrailersH1Client(t *testing.T) {
	addr := trailerBackend(t)
	tests := []struct {
		name             string
		proto            state.UpstreamProtocol
		hcmOn, clusterOn bool
		want             string
	}{
		{"h1 upstream, both on", state.UpstreamHTTP1, true, true, "42"},
		{"h1 upstream, hcm off (default)", state.UpstreamHTTP1, false, true, ""},
		{"h1 upstream, cluster off (default)", state.UpstreamHTTP1, true, false, ""},
		{"h2 upstream, hcm on", state.UpstreamHTTP2, true, false, "42"},
		{"h2 upstream, hcm off (default)", state.UpstreamHTTP2, false, false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cl := h1Cluster("be", addr)
			cl.Protocol = tc.proto
			cl.HTTP1Trailers = tc.clusterOn
			hcm := simpleHCM("be")
			hcm.HTTP1Trailers = tc.hcmOn
			e := newProxyEnv(t, hcm, cl)
			c := e.dial()
			for range 2 { // the connection stays in sync after a trailer section
				resp, body := c.roundTrip(t, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
				if resp.StatusCode != 200 || body != "body" || resp.Trailer.Get("X-Sum") != tc.want {
					t.Fatalf("got %d %q trailer %v, want x-sum %q", resp.StatusCode, body, resp.Trailer, tc.want)
				}
			}
		})
	}
}

// The chunked body reader collects trailer fields when asked, drops
// framing and routing fields, and rejects malformed sections.
func TestBodyReaderTrailers(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    string // name=value;...
		wantErr bool
	}{
		{"none", "3\r\nabc\r\n0\r\n\r\n", "", false},
		{"two fields", "3\r\nabc\r\n0\r\nX-Sum: 42\r\ngrpc-status: 0\r\n\r\n", "x-sum=42;grpc-status=0;", false},
		{"forbidden dropped", "1\r\na\r\n0\r\nContent-Length: 5\r\nHost: evil\r\nTransfer-Encoding: chunked\r\nX-Ok: 1\r\n\r\n", "x-ok=1;", false},
		{"obs-fold", "1\r\na\r\n0\r\nX-A: 1\r\n continued\r\n\r\n", "", true},
		{"bad name", "1\r\na\r\n0\r\nX A: 1\r\n\r\n", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var br h1Reader
			br.reset(strings.NewReader(tc.in), 4096)
			var b bodyReader
			b.reset(&br, bodyChunked, 0)
			var tl hlist
			b.trailers = &tl
			var body []byte
			var err error
			for {
				var p []byte
				p, err = b.next()
				body = append(body, p...)
				if err != nil {
					break
				}
			}
			if tc.wantErr {
				if err == io.EOF {
					t.Fatal("malformed trailers accepted")
				}
				return
			}
			if err != io.EOF {
				t.Fatal(err)
			}
			var got strings.Builder
			for _, f := range tl.h {
				got.WriteString(string(f.name) + "=" + string(f.value) + ";")
			}
			if got.String() != tc.want {
				t.Fatalf("trailers %q, want %q (body %q)", got.String(), tc.want, body)
			}
		})
	}
}

// writeLastChunk ends a chunked body with or without trailers.
func TestWriteLastChunk(t *testing.T) {
	var sb strings.Builder
	var w h1Writer
	w.reset(&sb, 64)
	writeLastChunk(&w, nil)
	var tl hlist
	tl.add("x-sum", "42")
	writeLastChunk(&w, &tl)
	_ = w.flush()
	if got := sb.String(); got != "0\r\n\r\n0\r\nx-sum: 42\r\n\r\n" {
		t.Fatalf("%q", got)
	}
}
