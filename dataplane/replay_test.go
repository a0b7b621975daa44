package dataplane

import (
	"bytes"
	"crypto/sha256"
	"io"
	"net"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

func TestReplayConnInterfaces(t *testing.T) {
	var c net.Conn = &replayConn{}
	if _, ok := c.(io.WriterTo); !ok {
		t.Error("replayConn is not an io.WriterTo: io.Copy from it would not splice")
	}
	if _, ok := c.(io.ReaderFrom); !ok {
		t.Error("replayConn is not an io.ReaderFrom: io.Copy into it would not splice")
	}
	if _, ok := c.(closeWriter); !ok {
		t.Error("replayConn cannot half-close")
	}
}

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a = dial(t, ln.Addr().String())
	bc := <-ch
	if bc == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { bc.Close() })
	return a, bc.(*net.TCPConn)
}

func TestReplayConnWriteTo(t *testing.T) {
	// replay buffer first, then the socket, through WriteTo into a TCP conn.
	cli, srv := tcpPair(t)
	out, sink := tcpPair(t)
	rc := &replayConn{TCPConn: srv, buf: []byte("peeked|")}
	go func() {
		_, _ = cli.Write([]byte("rest"))
		_ = cli.CloseWrite()
	}()
	n, err := io.Copy(out, rc)
	if err != nil || n != int64(len("peeked|rest")) {
		t.Fatalf("io.Copy = %d, %v", n, err)
	}
	_ = out.CloseWrite()
	got, err := io.ReadAll(sink)
	if err != nil || string(got) != "peeked|rest" {
		t.Fatalf("sink got %q, %v", got, err)
	}
}

// TestSplice64MB pushes 64 MB each way through a tcp_proxy chain that peeks
// (so the downstream is a replayConn) and checks every byte.
func TestSplice64MB(t *testing.T) {
	const size = 64 << 20
	e := newEnv(t, Options{})
	e.cluster("echo", startBackend(t, func(c net.Conn) {
		_, _ = io.Copy(c, c)
		_ = c.(*net.TCPConn).CloseWrite()
	}))
	e.listener(tcpListener("l", &state.FilterChain{Name: "raw", Match: state.FilterChainMatch{TransportProtocol: "raw_buffer"},
		TCPProxy: &state.TCPProxy{Cluster: "echo", IdleTimeout: time.Minute}}))
	c := dial(t, e.addr("l"))
	_ = c.SetDeadline(time.Now().Add(50 * time.Second))

	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i*7 + i>>13)
	}
	want := sha256.Sum256(payload)
	errc := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, bytes.NewReader(payload))
		if err == nil {
			err = c.CloseWrite()
		}
		errc <- err
	}()
	h := sha256.New()
	n, err := io.Copy(h, c)
	if err != nil {
		t.Fatal(err)
	}
	if werr := <-errc; werr != nil {
		t.Fatal(werr)
	}
	if n != size || !bytes.Equal(h.Sum(nil), want[:]) {
		t.Fatalf("echoed %d bytes, hash mismatch=%v", n, !bytes.Equal(h.Sum(nil), want[:]))
	}
}
