package dataplane

import (
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

type tlsClientCfg struct {
	serverName string
	roots      *testCert
	alpn       []string
	clientCert *testCert
	// chunk > 0 writes the first flight in chunks of that size with pauses,
	// so the ClientHello reaches the proxy in several TCP segments.
	chunk int
}

// slowConn splits writes into small pieces with pauses in between.
type slowConn struct {
	net.Conn
	chunk int
}

func (c *slowConn) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(c.chunk, len(p))
		m, err := c.Conn.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
		time.Sleep(5 * time.Millisecond)
	}
	return n, nil
}

func tlsDial(t *testing.T, addr string, cc *tlsClientCfg) *tls.Conn {
	t.Helper()
	raw := net.Conn(dial(t, addr))
	if cc.chunk > 0 {
		raw = &slowConn{Conn: raw, chunk: cc.chunk}
	}
	cfg := &tls.Config{ServerName: cc.serverName, NextProtos: cc.alpn}
	if cc.roots != nil {
		cfg.RootCAs = cc.roots.pool
	}
	if cc.clientCert != nil {
		cfg.Certificates = []tls.Certificate{cc.clientCert.tls}
	}
	c := tls.Client(raw, cfg)
	if err := c.Handshake(); err != nil {
		t.Fatalf("tls handshake via %s: %v", addr, err)
	}
	return c
}

// tlsBackend terminates TLS itself and greets with its tag, the SNI and the
// ALPN it saw, then echoes: proof that the proxy passed TLS through intact.
func tlsBackend(t *testing.T, tag string, cert *testCert) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert.tls}, NextProtos: []string{"h2", "http/1.1"}}
	return serveBackend(t, tls.NewListener(ln, cfg), func(c net.Conn) {
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			return
		}
		st := tc.ConnectionState()
		if _, err := tc.Write([]byte(tag + ":" + st.ServerName + ":" + st.NegotiatedProtocol + "\n")); err != nil {
			return
		}
		_, _ = io.Copy(tc, tc)
	})
}

func readLine(t *testing.T, c net.Conn) string {
	t.Helper()
	var b []byte
	one := make([]byte, 1)
	for {
		if _, err := c.Read(one); err != nil {
			t.Fatalf("read line: %v (so far %q)", err, b)
		}
		if one[0] == '\n' {
			return string(b)
		}
		b = append(b, one[0])
	}
}

func TestSNIPassthrough(t *testing.T) {
	e := newEnv(t, Options{})
	certA := newCert(t, "a.test")
	certB := newCert(t, "x.b.test", "y.b.test")
	e.cluster("a", tlsBackend(t, "A", certA))
	e.cluster("b", tlsBackend(t, "B", certB))
	e.listener(tcpListener("gw",
		&state.FilterChain{Name: "a", Match: state.FilterChainMatch{ServerNames: []string{"a.test"}}, TCPProxy: &state.TCPProxy{Cluster: "a"}},
		&state.FilterChain{Name: "b", Match: state.FilterChainMatch{ServerNames: []string{"*.b.test"}}, TCPProxy: &state.TCPProxy{Cluster: "b"}},
	))
	addr := e.addr("gw")
	tests := []struct {
		name string
		cc   tlsClientCfg
		want string
	}{
		{"exact sni", tlsClientCfg{serverName: "a.test", roots: certA, alpn: []string{"h2"}}, "A:a.test:h2"},
		{"wildcard sni", tlsClientCfg{serverName: "x.b.test", roots: certB, alpn: []string{"http/1.1"}}, "B:x.b.test:http/1.1"},
		{"hello split in 40-byte segments", tlsClientCfg{serverName: "y.b.test", roots: certB, chunk: 40}, "B:y.b.test:"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := tlsDial(t, addr, &tc.cc)
			if got := readLine(t, c); got != tc.want {
				t.Fatalf("backend said %q, want %q", got, tc.want)
			}
			roundTrip(t, c, "ping", "ping")
		})
	}
	t.Run("unknown sni is closed", func(t *testing.T) {
		c := dial(t, addr)
		tc := tls.Client(c, &tls.Config{ServerName: "c.test", InsecureSkipVerify: true})
		if err := tc.Handshake(); err == nil {
			t.Fatal("handshake succeeded through a listener with no matching chain")
		}
	})
	t.Run("plaintext is closed", func(t *testing.T) {
		c := dial(t, addr)
		if _, err := c.Write([]byte("hello\n")); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c, 3*time.Second)
	})
}

func TestTLSTermination(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("be", startBackend(t, greet("be:")))
	front := newCert(t, "front.test")
	clientCA := newCert(t, "client.test")
	other := newCert(t, "other.test")
	chain := tcpChain("tls", "be")
	chain.TLS = &state.DownstreamTLS{CertChainPEM: front.certPEM, KeyPEM: front.keyPEM,
		ALPN: []string{"echo/1"}, ClientCAPEM: clientCA.certPEM, RequireClientCert: true}
	e.listener(tcpListener("l", chain))
	addr := e.addr("l")

	t.Run("valid client cert", func(t *testing.T) {
		c := tlsDial(t, addr, &tlsClientCfg{serverName: "front.test", roots: front, alpn: []string{"echo/1"}, clientCert: clientCA})
		if p := c.ConnectionState().NegotiatedProtocol; p != "echo/1" {
			t.Fatalf("ALPN = %q, want echo/1", p)
		}
		roundTrip(t, c, "hi", "be:hi")
	})
	// Istio clients offer ALPN values the chain does not list; like Envoy
	// the handshake goes on without a negotiated protocol.
	t.Run("no ALPN overlap", func(t *testing.T) {
		c := tlsDial(t, addr, &tlsClientCfg{serverName: "front.test", roots: front, alpn: []string{"istio-peer-exchange", "istio"}, clientCert: clientCA})
		if p := c.ConnectionState().NegotiatedProtocol; p != "" {
			t.Fatalf("ALPN = %q, want none", p)
		}
		roundTrip(t, c, "hi", "be:hi")
	})
	for _, cc := range []struct {
		name string
		cert *testCert
	}{{"no client cert", nil}, {"untrusted client cert", other}} {
		t.Run(cc.name, func(t *testing.T) {
			cfg := &tls.Config{ServerName: "front.test", RootCAs: front.pool}
			if cc.cert != nil {
				cfg.Certificates = []tls.Certificate{cc.cert.tls}
			}
			c := tls.Client(dial(t, addr), cfg)
			// TLS 1.3 clients finish before the server checks their
			// certificate; the rejection shows up on the first read.
			_ = c.Handshake()
			_, _ = c.Write([]byte("hi"))
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if n, err := c.Read(make([]byte, 8)); err == nil {
				t.Fatalf("read %d bytes without a valid client certificate", n)
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("connection neither served nor closed")
			}
		})
	}
}

func TestHTTPInspector(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("h1", startBackend(t, greet("h1|")))
	e.cluster("h2c", startBackend(t, greet("h2c|")))
	e.cluster("raw", startBackend(t, greet("raw|")))
	l := tcpListener("l",
		&state.FilterChain{Name: "h1", Match: state.FilterChainMatch{TransportProtocol: "raw_buffer", ApplicationProtocols: []string{"http/1.1", "http/1.0"}}, TCPProxy: &state.TCPProxy{Cluster: "h1"}},
		&state.FilterChain{Name: "h2c", Match: state.FilterChainMatch{TransportProtocol: "raw_buffer", ApplicationProtocols: []string{"h2c"}}, TCPProxy: &state.TCPProxy{Cluster: "h2c"}},
	)
	l.DefaultFilterChain = tcpChain("default", "raw")
	e.listener(l)
	addr := e.addr("l")
	tests := []struct {
		name, send, tag string
	}{
		{"http/1.1", "GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", "h1|"},
		{"http/1.0", "HEAD / HTTP/1.0\r\n\r\n", "h1|"},
		{"h2 prior knowledge", h2Preface + "\x00\x00\x00\x04\x00\x00\x00\x00\x00", "h2c|"},
		{"raw bytes", "hello\n", "raw|"},
		{"request line in two segments", "GET /a HTTP/1.1\r\n\r\n", "h1|"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, addr)
			if strings.Contains(tc.name, "segments") {
				if _, err := c.Write([]byte(tc.send[:5])); err != nil {
					t.Fatal(err)
				}
				time.Sleep(50 * time.Millisecond)
				roundTrip(t, c, tc.send[5:], tc.tag+tc.send)
				return
			}
			// The backend must see every byte, the peeked ones included.
			roundTrip(t, c, tc.send, tc.tag+tc.send)
		})
	}
}

func TestListenerFiltersTimeout(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("be", startBackend(t, greet("220 ready\r\n")))
	mk := func(name string, cont bool) *state.Listener {
		l := tcpListener(name, &state.FilterChain{Name: "raw", Match: state.FilterChainMatch{TransportProtocol: "raw_buffer"}, TCPProxy: &state.TCPProxy{Cluster: "be"}})
		l.ListenerFiltersTimeout = 200 * time.Millisecond
		l.ContinueOnListenerFiltersTimeout = cont
		return l
	}
	e.listener(mk("close", false))
	e.listener(mk("continue", true))
	unbounded := mk("unbounded", false)
	unbounded.ListenerFiltersTimeout = -1 // an explicit 0s in xDS
	e.listener(unbounded)

	t.Run("envoy default closes silent clients", func(t *testing.T) {
		c := dial(t, e.addr("close"))
		expectClosed(t, c, 3*time.Second)
		eventually(t, "counted", func() bool { return e.srv.Stats()["close"].NoFilterChain == 1 })
	})
	t.Run("disabled timeout waits for the first bytes", func(t *testing.T) {
		c := dial(t, e.addr("unbounded"))
		time.Sleep(400 * time.Millisecond) // twice the other listeners' timeout
		roundTrip(t, c, "hello\n", "220 ready\r\nhello\n")
	})
	t.Run("continue serves silent clients", func(t *testing.T) {
		c := dial(t, e.addr("continue"))
		start := time.Now()
		got := make([]byte, len("220 ready\r\n"))
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Fatalf("served after %v; expected to wait for the listener filters timeout", d)
		}
	})
}
