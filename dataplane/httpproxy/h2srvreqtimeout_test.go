package httpproxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/internal/trickle"
	"github.com/meshlet/meshlet/state"
)

// TestH2RequestTimeout: request_timeout bounds receiving the whole request
// on HTTP/2 streams. A body still arriving at the deadline gets 408 SI
// "request timeout" before the response, or a reset once the response
// has started; a request complete in time is served, and its response may
// then stream past the deadline.
func TestH2RequestTimeout(t *testing.T) {
	h2LeakCheck(t)
	b := newH2Backend(t, 0, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		switch r.URL.Path {
		case "/echo":
			body, _ := io.ReadAll(r.Body)
			w.Write(body)
		case "/long": // the request first, then a response longer than the timeout
			io.Copy(io.Discard, r.Body)
			for range 8 {
				io.WriteString(w, "x")
				rc.Flush()
				time.Sleep(50 * time.Millisecond)
			}
		case "/bidi": // response headers at once, then the request body
			rc.EnableFullDuplex()
			w.WriteHeader(200)
			rc.Flush()
			buf := make([]byte, 64)
			for {
				n, err := r.Body.Read(buf)
				if n > 0 {
					w.Write(buf[:n])
					rc.Flush()
				}
				if err != nil {
					return
				}
			}
		case "/silent":
			io.Copy(io.Discard, r.Body)
			select {
			case <-r.Context().Done():
			case <-time.After(3 * time.Second):
			}
		}
	}))
	tests := []struct {
		name    string
		idle    time.Duration // stream_idle_timeout
		path    string
		body    *trickle.Body // nil: no body (END_STREAM on HEADERS)
		status  int
		flags   string
		resp    string
		readErr bool // the response body ends in a reset
	}{
		{name: "slow body", path: "/echo", body: trickle.New(100, 40*time.Millisecond, 'b'),
			status: 408, flags: FlagStreamIdleTimeout, resp: BodyRequestTimeout},
		{name: "body in time", path: "/echo", body: trickle.New(3, 20*time.Millisecond, 'b'),
			status: 200, flags: "-", resp: "bbb"},
		{name: "long response after complete request", path: "/long", body: trickle.New(2, 10*time.Millisecond, 'b'),
			status: 200, flags: "-", resp: "xxxxxxxx"},
		{name: "long response without body", path: "/long",
			status: 200, flags: "-", resp: "xxxxxxxx"},
		{name: "response started, request still arriving", path: "/bidi", body: trickle.New(100, 40*time.Millisecond, 'b'),
			status: 200, flags: "-", readErr: true},
		// Bytes every 40ms keep stream_idle_timeout at bay; request_timeout
		// still ends the stream.
		{name: "steady body under idle timeout", idle: 150 * time.Millisecond, path: "/echo", body: trickle.New(100, 40*time.Millisecond, 'b'),
			status: 408, flags: FlagStreamIdleTimeout, resp: BodyRequestTimeout},
		// Once the request is complete, the idle timeout still applies.
		{name: "idle after complete request", idle: 150 * time.Millisecond, path: "/silent", body: trickle.New(1, 0, 'b'),
			status: 408, flags: FlagStreamIdleTimeout, resp: BodyStreamTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newH2Env(t, h2EnvOpts{
				hcm: &state.HTTPConnectionManager{Codec: state.CodecHTTP2,
					RequestTimeout: 250 * time.Millisecond, StreamIdleTimeout: tc.idle},
				clusters: []*state.Cluster{staticCluster("be", state.UpstreamHTTP2, b.addr)},
				rc:       routeAll("be"),
			})
			client, _ := h2cClient(t)
			var body io.Reader
			if tc.body != nil {
				body = tc.body
				defer tc.body.Close()
			}
			req, _ := http.NewRequest("POST", "http://"+e.addr+tc.path, body)
			start := time.Now()
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get(HeaderResponseFlags) != tc.flags {
				t.Fatalf("got %d flags %s, want %d flags %s", resp.StatusCode, resp.Header.Get(HeaderResponseFlags), tc.status, tc.flags)
			}
			if tc.readErr {
				if rerr == nil {
					t.Fatalf("response body %q ended cleanly, want a stream reset", got)
				}
				if el := time.Since(start); el < 200*time.Millisecond || el > 2*time.Second {
					t.Fatalf("reset after %v, want about the 250ms request timeout", el)
				}
				return
			}
			if rerr != nil || !strings.EqualFold(string(got), tc.resp) {
				t.Fatalf("body %q (%v), want %q", got, rerr, tc.resp)
			}
		})
	}
}
