package dataplane

import (
	"io"
	"net"
	"testing"
	"time"
)

// TestTCPProxyMaxDownstreamConnectionDuration: tcp_proxy's
// max_downstream_connection_duration closes a busy connection once it
// passes, including one whose client already half-closed, and the
// backend's side ends too.
func TestTCPProxyMaxDownstreamConnectionDuration(t *testing.T) {
	const limit = 400 * time.Millisecond
	upClosed := make(chan struct{}, 4)
	be := startBackend(t, func(c net.Conn) {
		lineEcho("be")(c)
		// After the client's FIN the backend keeps talking, so only the
		// limit can end the connection; a failed write means it did.
		for {
			if _, err := c.Write([]byte(".")); err != nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		upClosed <- struct{}{}
	})
	e := newEnv(t, Options{})
	e.cluster("be", be)
	chain := tcpChain("tcp", "be")
	chain.TCPProxy.MaxDownstreamConnectionDuration = limit
	e.listener(tcpListener("l", chain))
	addr := e.addr("l")

	tests := []struct {
		name      string
		halfClose bool
	}{
		{"active both ways", false},
		{"client half-closed", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, addr)
			start := time.Now()
			// Traffic keeps flowing: the idle timeout is not what ends it.
			for time.Since(start) < limit/2 {
				roundTrip(t, c, "x", "be:x")
				time.Sleep(20 * time.Millisecond)
			}
			if tc.halfClose {
				if err := c.CloseWrite(); err != nil {
					t.Fatal(err)
				}
			}
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("connection not closed within 3s")
				}
			}
			if d := time.Since(start); d < limit-50*time.Millisecond {
				t.Fatalf("closed after %v, before max_downstream_connection_duration %v", d, limit)
			}
			select {
			case <-upClosed:
			case <-time.After(3 * time.Second):
				t.Fatal("upstream connection still open after the limit")
			}
		})
	}

	t.Run("unset keeps it open", func(t *testing.T) {
		e := newEnv(t, Options{})
		e.cluster("be", be)
		e.listener(tcpListener("l", tcpChain("tcp", "be")))
		c := dial(t, e.addr("l"))
		roundTrip(t, c, "x", "be:x")
		_ = c.SetReadDeadline(time.Now().Add(limit + 200*time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err == io.EOF {
			t.Fatal("connection closed without a limit")
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		roundTrip(t, c, "y", "be:y")
	})
}
