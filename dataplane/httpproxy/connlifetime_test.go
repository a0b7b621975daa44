package httpproxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshlet/meshlet/state"
)

// lifetimeBackend answers /slow after 400ms, /hang only when the request
// is cancelled (reporting it on cancelled), anything else at once.
func lifetimeBackend(t *testing.T, cancelled chan<- struct{}) *backend {
	return newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow":
			time.Sleep(400 * time.Millisecond)
		case "/hang":
			select {
			case <-r.Context().Done():
				if cancelled != nil {
					cancelled <- struct{}{}
				}
				return
			case <-time.After(10 * time.Second):
			}
		}
		_, _ = io.WriteString(w, "ok")
	}))
}

// expectEOF waits up to wait for the proxy to close c and returns when it
// did.
func expectEOF(t *testing.T, c *rawConn, wait time.Duration) time.Time {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(wait))
	if b, err := c.br.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open: read %q, %v", b, err)
	}
	return time.Now()
}

// TestMaxConnectionDurationH1: once max_connection_duration has passed,
// the response in flight carries connection: close and the connection
// ends after it; an idle keep-alive connection is closed when the
// duration passes; without the limit the connection stays.
func TestMaxConnectionDurationH1(t *testing.T) {
	be := lifetimeBackend(t, nil)
	const age = 200 * time.Millisecond

	t.Run("in flight", func(t *testing.T) {
		hcm := simpleHCM("be")
		hcm.MaxConnectionDuration = age
		e := newProxyEnv(t, hcm, h1Cluster("be", be.hostport()))
		c := e.dial()
		if resp, _ := c.roundTrip(t, "GET /fast HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("first response: status %d, close %v; want 200 keep-alive", resp.StatusCode, resp.Close)
		}
		// The duration passes while /slow is at the backend.
		resp, body := c.roundTrip(t, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
		if resp.StatusCode != 200 || body != "ok" || !resp.Close {
			t.Fatalf("response in flight: status %d %q, close %v; want 200 ok with connection: close", resp.StatusCode, body, resp.Close)
		}
		expectEOF(t, c, 2*time.Second)
	})

	t.Run("idle", func(t *testing.T) {
		hcm := simpleHCM("be")
		hcm.MaxConnectionDuration = age
		hcm.IdleTimeout = time.Hour
		e := newProxyEnv(t, hcm, h1Cluster("be", be.hostport()))
		start := time.Now()
		c := e.dial()
		if resp, _ := c.roundTrip(t, "GET /fast HTTP/1.1\r\nHost: a\r\n\r\n"); resp.Close {
			t.Fatal("response before the duration carries connection: close")
		}
		if d := expectEOF(t, c, 3*time.Second).Sub(start); d < age-20*time.Millisecond {
			t.Fatalf("idle connection closed after %v, before max_connection_duration %v", d, age)
		}
	})

	t.Run("unset", func(t *testing.T) {
		e := newProxyEnv(t, simpleHCM("be"), h1Cluster("be", be.hostport()))
		c := e.dial()
		c.roundTrip(t, "GET /fast HTTP/1.1\r\nHost: a\r\n\r\n")
		time.Sleep(2 * age)
		if resp, _ := c.roundTrip(t, "GET /fast HTTP/1.1\r\nHost: a\r\n\r\n"); resp.StatusCode != 200 || resp.Close {
			t.Fatalf("without a limit: status %d, close %v", resp.StatusCode, resp.Close)
		}
	})
}

// TestMaxConnectionDurationH2: the connection sends GOAWAY when the
// duration passes; the stream in flight completes and the client carries
// on over a new connection.
func TestMaxConnectionDurationH2(t *testing.T) {
	h2LeakCheck(t)
	be := lifetimeBackend(t, nil)
	hcm := &state.HTTPConnectionManager{Codec: state.CodecHTTP2, MaxConnectionDuration: 200 * time.Millisecond, DrainTimeout: 3 * time.Second}
	e := newH2Env(t, h2EnvOpts{hcm: hcm, clusters: []*state.Cluster{h1Cluster("be", be.hostport())}, rc: routeAll("be")})
	c, _ := h2cClient(t)
	for i, path := range []string{"/slow", "/fast"} {
		resp, err := c.Get("http://" + e.addr + path)
		if err != nil {
			t.Fatalf("request %d (%s): %v", i, path, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("request %d (%s): %d %q", i, path, resp.StatusCode, b)
		}
	}
	if n := e.accept.Load(); n != 2 {
		t.Fatalf("%d downstream connections, want 2 (the first drained by max_connection_duration)", n)
	}
}

// TestMaxConnectionDurationH2Idle: a connection without streams gets
// GOAWAY(NO_ERROR) at the duration and is closed.
func TestMaxConnectionDurationH2Idle(t *testing.T) {
	h2LeakCheck(t)
	const age = 150 * time.Millisecond
	hcm := &state.HTTPConnectionManager{Codec: state.CodecHTTP2, MaxConnectionDuration: age}
	e := newH2Env(t, h2EnvOpts{hcm: hcm, rc: routeAll("be")})
	start := time.Now()
	conn, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var goAway *http2.GoAwayFrame
	for goAway == nil {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY before %v", err)
		}
		if g, ok := f.(*http2.GoAwayFrame); ok {
			goAway = g
		}
	}
	if d := time.Since(start); d < age-20*time.Millisecond {
		t.Fatalf("GOAWAY after %v, before max_connection_duration %v", d, age)
	}
	if goAway.ErrCode != http2.ErrCodeNo {
		t.Fatalf("GOAWAY code %v, want NO_ERROR", goAway.ErrCode)
	}
	for {
		if _, err := fr.ReadFrame(); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal("connection not closed after GOAWAY")
			}
			break
		}
	}
}

// TestMaxConnectionDurationKeepsStreams: as in Envoy, a stream still open
// when max_connection_duration passes is not cut, also well past
// drain_timeout: it completes, and the connection closes after it.
func TestMaxConnectionDurationKeepsStreams(t *testing.T) {
	h2LeakCheck(t)
	be := lifetimeBackend(t, nil)
	hcm := &state.HTTPConnectionManager{Codec: state.CodecHTTP2, MaxConnectionDuration: 50 * time.Millisecond, DrainTimeout: -1}
	e := newH2Env(t, h2EnvOpts{hcm: hcm, clusters: []*state.Cluster{h1Cluster("be", be.hostport())}, rc: routeAll("be")})
	c, _ := h2cClient(t)
	resp, err := c.Get("http://" + e.addr + "/slow")
	if err != nil {
		t.Fatalf("stream open across max_connection_duration: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(b) != "ok" {
		t.Fatalf("got %d %q, %v; want the whole response", resp.StatusCode, b, err)
	}
}
