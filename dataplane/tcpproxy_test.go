package dataplane

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

// TestTCPProxyHalfClose: the client shuts its write side; the backend reads
// to EOF and only then answers; the answer must still reach the client.
func TestTCPProxyHalfClose(t *testing.T) {
	e := newEnv(t, Options{})
	be := startBackend(t, func(c net.Conn) {
		req, err := io.ReadAll(c)
		if err != nil {
			return
		}
		_, _ = c.Write([]byte("reply:" + string(req)))
		_ = c.(*net.TCPConn).CloseWrite()
		_, _ = io.Copy(io.Discard, c)
	})
	e.cluster("be", be)
	e.listener(tcpListener("l", tcpChain("tcp", "be")))
	c := dial(t, e.addr("l"))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "reply:ping" {
		t.Fatalf("got %q", got)
	}
	st := e.srv.Stats()["l"]
	if st.Accepted != 1 {
		t.Fatalf("accepted = %d, want 1", st.Accepted)
	}
	eventually(t, "active back to 0", func() bool { return e.srv.Stats()["l"].Active == 0 })
}

// TestServerFirstWithoutPeek: no chain needs the first bytes, so the proxy
// must connect upstream without waiting for the client to speak.
func TestServerFirstWithoutPeek(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("be", startBackend(t, greet("220 hello\r\n")))
	e.listener(tcpListener("l", tcpChain("tcp", "be")))
	c := dial(t, e.addr("l"))
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	got := make([]byte, len("220 hello\r\n"))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("server greeting not relayed: %v", err)
	}
}

func TestTCPProxyWeighted(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("a", startBackend(t, greet("A")))
	e.cluster("b", startBackend(t, greet("B")))
	e.listener(tcpListener("l", &state.FilterChain{Name: "w", TCPProxy: &state.TCPProxy{
		WeightedClusters: []state.WeightedCluster{{Name: "a", Weight: 80}, {Name: "b", Weight: 20}},
	}}))
	addr := e.addr("l")
	const n = 200
	counts := map[string]int{}
	for i := 0; i < n; i++ {
		c := dial(t, addr)
		b := make([]byte, 1)
		if _, err := io.ReadFull(c, b); err != nil {
			t.Fatalf("conn %d: %v", i, err)
		}
		counts[string(b)]++
		c.Close()
	}
	// 80/20 over 200 connections: sd is about 5.7, allow about 5 sd.
	if a := counts["A"]; a < 130 || a > 190 || counts["A"]+counts["B"] != n {
		t.Fatalf("split = %v, want about 160/40", counts)
	}
}

func TestTCPProxyIdleTimeout(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("be", startBackend(t, lineEcho("be")))
	chain := tcpChain("tcp", "be")
	chain.TCPProxy.IdleTimeout = 300 * time.Millisecond
	e.listener(tcpListener("l", chain))
	addr := e.addr("l")

	t.Run("activity keeps it open", func(t *testing.T) {
		c := dial(t, addr)
		for i := 0; i < 8; i++ { // 8 x 100ms = 2.7 idle timeouts
			roundTrip(t, c, "x", "be:x")
			time.Sleep(100 * time.Millisecond)
		}
	})
	t.Run("silence closes", func(t *testing.T) {
		c := dial(t, addr)
		roundTrip(t, c, "x", "be:x")
		start := time.Now()
		expectClosed(t, c, 3*time.Second)
		if d := time.Since(start); d < 250*time.Millisecond {
			t.Fatalf("closed after %v, before the idle timeout", d)
		}
	})
}

func TestTCPProxyIdleTimeoutTLS(t *testing.T) {
	// A terminated TLS side cannot use kernel counters: reads are counted.
	e := newEnv(t, Options{})
	e.cluster("be", startBackend(t, lineEcho("be")))
	cert := newCert(t, "front.test")
	chain := tcpChain("tcp", "be")
	chain.TCPProxy.IdleTimeout = 300 * time.Millisecond
	chain.TLS = &state.DownstreamTLS{CertChainPEM: cert.certPEM, KeyPEM: cert.keyPEM}
	e.listener(tcpListener("l", chain))
	c := tlsDial(t, e.addr("l"), &tlsClientCfg{serverName: "front.test", roots: cert})
	for i := 0; i < 6; i++ {
		time.Sleep(100 * time.Millisecond)
		roundTrip(t, c, "x", "be:x")
	}
	start := time.Now()
	expectClosed(t, c, 3*time.Second)
	if d := time.Since(start); d < 250*time.Millisecond {
		t.Fatalf("closed after %v, before the idle timeout", d)
	}
}

func TestTCPProxyUpstreamFailures(t *testing.T) {
	e := newEnv(t, Options{})
	// A port nothing listens on: bind, note, close.
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	e.cluster("dead", dead)
	e.cluster("empty")
	// Distinct listeners per case keep the counters apart.
	cases := []struct {
		name    string
		cluster string
		stat    func(ListenerStats) uint64
	}{
		{"connect failure (UF)", "dead", func(s ListenerStats) uint64 { return s.UpstreamConnectFailure }},
		{"no healthy upstream (UH)", "empty", func(s ListenerStats) uint64 { return s.NoHealthyUpstream }},
		{"no cluster (NC)", "missing", func(s ListenerStats) uint64 { return s.NoCluster }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			name := strings.ReplaceAll(tc.name, " ", "-")
			e.listener(tcpListener(name, tcpChain("tcp", tc.cluster)))
			c := dial(t, e.addr(name))
			expectClosed(t, c, 3*time.Second)
			eventually(t, "failure counted", func() bool { return tc.stat(e.srv.Stats()[name]) == 1 })
		})
	}
}
