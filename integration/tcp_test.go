package integration

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// startTCPEcho echoes everything it reads and half-closes after EOF.
func startTCPEcho(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				_ = c.(*net.TCPConn).CloseWrite()
			}()
		}
	}()
	t.Cleanup(func() { lis.Close() })
	return lis.Addr().String()
}

// TestTCPProxyHalfClose sends 8 MB through a tcp_proxy listener, half-closes,
// and reads the whole echo back: the proxy must carry the FIN both ways.
func TestTCPProxyHalfClose(t *testing.T) {
	cp := startControlPlane(t)
	echo := startTCPEcho(t)
	listener := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cp.set(
		tcpListener(t, "tcp", listener, "echo"),
		edsCluster("echo", clusterv3.Cluster_ROUND_ROBIN, false),
		endpoints(t, "echo", echo),
	)
	startProxy(t, cp, proxyOpts{})
	var conn net.Conn
	eventually(t, 10*time.Second, func() error {
		c, err := net.Dial("tcp", listener)
		if err != nil {
			return err
		}
		conn = c
		return nil
	})
	defer conn.Close()
	payload := make([]byte, 8<<20)
	_, _ = rand.Read(payload)
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		if err == nil {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		errc <- err
	}()
	_ = conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("reading echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo differs: got %d bytes, want %d", len(got), len(payload))
	}
}
