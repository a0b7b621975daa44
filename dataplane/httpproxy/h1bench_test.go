package httpproxy

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"testing"
)

// TestServeForLoadTest runs the proxy on MESHLET_H1_LISTEN in front of
// MESHLET_H1_BACKEND until interrupted, for measuring with wrk/fortio:
//
//	MESHLET_H1_LISTEN=127.0.0.1:18081 MESHLET_H1_BACKEND=127.0.0.1:18080 \
//	  GOMAXPROCS=1 taskset -c 1 ./httpproxy.test -test.run TestServeForLoadTest
func TestServeForLoadTest(t *testing.T) {
	listen, be := os.Getenv("MESHLET_H1_LISTEN"), os.Getenv("MESHLET_H1_BACKEND")
	if listen == "" || be == "" {
		t.Skip("MESHLET_H1_LISTEN and MESHLET_H1_BACKEND not set")
	}
	e := newProxyEnvAddr(t, listen, simpleHCM("c"), Options{}, h1Cluster("c", be))
	fmt.Fprintln(os.Stderr, "proxy listening on", e.addr)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	signal.Stop(sig)
}

// BenchmarkProxyH1 measures client -> proxy -> backend over loopback with
// one keep-alive client connection. allocs/op includes the raw client and
// the backend (a minimal fixed-response server), not net/http.
func BenchmarkProxyH1(b *testing.B) {
	be := newRawBackend(b)
	e := newProxyEnvOpts(b, simpleHCM("c"), Options{}, h1Cluster("c", be))
	c := e.dial()
	req := []byte("GET /bench HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\n\r\n")
	buf := make([]byte, 4096)
	want := len(rawBackendResponse)
	tail := []byte("hello from backend\n")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		// The proxy's response differs from the backend's (server, date
		// and request id headers); read until the body's final byte.
		n := 0
		for {
			m, err := c.Read(buf[n:])
			if err != nil {
				b.Fatal(err)
			}
			n += m
			if n >= want && bytes.HasSuffix(buf[:n], tail) {
				break
			}
		}
	}
}

var (
	rawResp = []byte(rawBackendResponse)
	crlf2   = []byte("\r\n\r\n")
)

const rawBackendResponse = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n\r\nhello from backend\n"

// newRawBackend is a minimal keep-alive HTTP/1.1 server answering every
// request head with a fixed response, so benchmarks measure the proxy.
func newRawBackend(tb testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	tb.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			go func() {
				buf := make([]byte, 8192)
				n := 0
				for {
					m, err := c.Read(buf[n:])
					if err != nil {
						return
					}
					n += m
					for {
						i := bytes.Index(buf[:n], crlf2)
						if i < 0 {
							break
						}
						if _, err := c.Write(rawResp); err != nil {
							return
						}
						n = copy(buf, buf[i+4:n])
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

var _ = http.StatusOK
