package httpproxy

import (
	"io"
	"net"
	"runtime"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// The watcher reports a client's close or reset at once, stops on bytes
// without consuming them, and leaves the connection usable after stop.
func TestDCWatch(t *testing.T) {
	tests := []struct {
		name     string
		client   func(c net.Conn)
		wantPoke bool
		wantGone bool
		wantRead string // what the server can still read after stop
	}{
		{"client closes", func(c net.Conn) { c.Close() }, true, true, ""},
		{"client resets", func(c net.Conn) { c.(*net.TCPConn).SetLinger(0); c.Close() }, true, true, ""},
		{"pipelined bytes", func(c net.Conn) { io.WriteString(c, "GET /") }, true, false, "GET /"},
		{"nothing happens", func(net.Conn) {}, false, false, "late"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, cli := tcpPair(t)
			poked := make(chan bool, 1)
			w := startDCWatch(srv, func(gone bool) { poked <- gone })
			if w == nil {
				if runtime.GOOS == "linux" {
					t.Fatal("a TCP connection must be watchable on Linux")
				}
				t.Skip("connection cannot be watched on this platform")
			}
			tc.client(cli)
			select {
			case gone := <-poked:
				if !tc.wantPoke || gone != tc.wantGone {
					t.Fatalf("poke(gone=%v), want poke %v gone %v", gone, tc.wantPoke, tc.wantGone)
				}
			case <-time.After(300 * time.Millisecond):
				if tc.wantPoke {
					t.Fatal("watcher did not speak")
				}
			}
			if gone := w.stop(srv); gone != tc.wantGone {
				t.Fatalf("stop() = %v, want %v", gone, tc.wantGone)
			}
			if tc.wantRead == "" {
				return
			}
			if tc.wantRead == "late" {
				io.WriteString(cli, "late")
			}
			// stop cleared its deadline: a read blocks until data comes.
			buf := make([]byte, len(tc.wantRead))
			_ = srv.SetReadDeadline(time.Now().Add(2 * time.Second))
			if _, err := io.ReadFull(srv, buf); err != nil || string(buf) != tc.wantRead {
				t.Fatalf("read after stop: %q %v, want %q", buf, err, tc.wantRead)
			}
		})
	}
}
