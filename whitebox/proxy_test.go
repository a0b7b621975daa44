package whitebox

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeDataplane stands in for dataplane.Server: a connection starting
// with an HTTP request gets HTTP responses naming the destination it was
// handed over for; anything else is echoed after a "dst=..." line. Port 1
// has no listener.
type fakeDataplane struct{ wg sync.WaitGroup }

func (f *fakeDataplane) Serves(dst netip.AddrPort) bool { return dst.Port() != 1 }

func (f *fakeDataplane) HandleAs(c *net.TCPConn, pre []byte, _, dst netip.AddrPort) error {
	if !f.Serves(dst) {
		return errors.New("no listener")
	}
	f.wg.Add(1)
	defer f.wg.Done()
	defer c.Close()
	br := bufio.NewReader(io.MultiReader(strings.NewReader(string(pre)), c))
	if b, _ := br.Peek(4); string(b) == "GET " {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return nil
			}
			body := fmt.Sprintf("dst=%s host=%s path=%s", dst, req.Host, req.URL.RequestURI())
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	}
	fmt.Fprintf(c, "dst=%s\n", dst)
	_, _ = io.Copy(c, br)
	return nil
}

func startTest(t *testing.T, fwd ...Forward) (*Server, *fakeDataplane) {
	t.Helper()
	dp := &fakeDataplane{}
	s, err := Start(Options{
		Addr:      "127.0.0.1:0",
		Forwards:  fwd,
		Store:     sidecarStore(),
		Dataplane: dp,
		Lookup: func(context.Context, string) ([]netip.Addr, error) {
			return nil, errors.New("no such host")
		},
		Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		dp.wg.Wait()
	})
	return s, dp
}

func TestProxyAbsoluteForm(t *testing.T) {
	s, _ := startTest(t)
	tr := &http.Transport{Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: s.Addr().String()})}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	for _, tt := range []struct {
		url    string
		status int
		body   string
	}{
		{"http://web.default.svc.cluster.local:8080/a?b=c", 200, "dst=0.0.0.0:8080 host=web.default.svc.cluster.local:8080 path=/a?b=c"},
		{"http://10.96.0.10:9000/x", 200, "dst=10.96.0.10:9000 host=10.96.0.10:9000 path=/x"},
		{"http://nope.default.svc.cluster.local:8080/", 502, "whitebox: unknown destination nope.default.svc.cluster.local:8080: not in the mesh config; DNS: no such host\n"},
		{"http://127.0.0.1:1/", 503, "whitebox: no mesh listener for 127.0.0.1:1 (resolved from 127.0.0.1:1)\n"},
	} {
		resp, err := c.Get(tt.url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status || string(body) != tt.body {
			t.Errorf("GET %s = %d %q; want %d %q", tt.url, resp.StatusCode, body, tt.status, tt.body)
		}
	}
}

func TestProxyOriginFormRejected(t *testing.T) {
	s, _ := startTest(t)
	resp, err := http.Get("http://" + s.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), "not a proxy request") {
		t.Fatalf("origin-form: %d %q", resp.StatusCode, body)
	}
}

// The bytes a client sends right behind the CONNECT head reach the data
// plane first, in order.
func TestProxyConnectEarlyBytes(t *testing.T) {
	s, _ := startTest(t)
	for _, tt := range []struct {
		target, status, reply string
	}{
		{"echo.default.svc.cluster.local:9000", "HTTP/1.1 200 Connection established", "dst=10.96.0.10:9000\nearly|late"},
		{"nope.default.svc.cluster.local:9000", "HTTP/1.1 502 Bad Gateway", ""},
		{"echo.default.svc.cluster.local", "HTTP/1.1 400 Bad Request", ""},
	} {
		c, err := net.Dial("tcp", s.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\nearly|", tt.target, tt.target)
		br := bufio.NewReader(c)
		status, _ := br.ReadString('\n')
		if strings.TrimSpace(status) != tt.status {
			t.Errorf("CONNECT %s: %q, want %q", tt.target, status, tt.status)
			c.Close()
			continue
		}
		if tt.reply != "" {
			if line, _ := br.ReadString('\n'); line != "\r\n" {
				t.Errorf("CONNECT %s: header line %q", tt.target, line)
			}
			_, _ = c.Write([]byte("late"))
			_ = c.(*net.TCPConn).CloseWrite()
			got, _ := io.ReadAll(br)
			if string(got) != tt.reply {
				t.Errorf("CONNECT %s: tunnel got %q, want %q", tt.target, got, tt.reply)
			}
		}
		c.Close()
	}
}

func TestForward(t *testing.T) {
	s, _ := startTest(t,
		Forward{Listen: "127.0.0.1:0", Target: "echo.default.svc.cluster.local:9000"},
		Forward{Listen: "127.0.0.1:0", Target: "nope.default.svc.cluster.local:9000"},
	)
	addrs := s.ForwardAddrs()
	c, err := net.Dial("tcp", addrs[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = c.Write([]byte("ping"))
	_ = c.(*net.TCPConn).CloseWrite()
	got, _ := io.ReadAll(c)
	if string(got) != "dst=10.96.0.10:9000\nping" {
		t.Fatalf("forward: %q", got)
	}
	// An unresolvable target closes the connection at once.
	c2, err := net.Dial("tcp", addrs[1].String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_ = c2.SetDeadline(time.Now().Add(5 * time.Second))
	if n, err := c2.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("unresolved forward: read %d, %v; want EOF", n, err)
	}
}

func TestStartRejectsNonLoopback(t *testing.T) {
	_, err := Start(Options{Addr: "0.0.0.0:0", Store: sidecarStore(), Dataplane: &fakeDataplane{}})
	if err == nil || !strings.Contains(err.Error(), "must be loopback") {
		t.Fatalf("Start on 0.0.0.0: %v", err)
	}
}
