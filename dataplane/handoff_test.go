package dataplane

import (
	"context"
	"net"
	"os"
	"testing"
	"time"
)

// unixPair returns both ends of a connected Unix stream socket.
func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	path := t.TempDir() + "/h.sock"
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan *net.UnixConn, 1)
	go func() {
		c, _ := ln.AcceptUnix()
		ch <- c
	}()
	a, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestHandoffMovesListener: a second server given the first one's sockets
// serves on the same address while the first still runs; after the first
// shuts down, connections keep succeeding and none is refused.
func TestHandoffMovesListener(t *testing.T) {
	old := newEnv(t, Options{})
	old.cluster("be", startBackend(t, lineEcho("be")))
	old.listener(tcpListener("l", tcpChain("tcp", "be")))
	addr := old.addr("l")

	files, err := old.srv.ListenerFiles()
	if err != nil {
		t.Fatal(err)
	}
	a, b := unixPair(t)
	if err := SendListeners(a, files); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		f.Close()
	}
	got, err := ReceiveListeners(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("received %d sockets, want 1: %v", len(got), got)
	}

	spec := tcpListener("l", tcpChain("tcp", "be"))
	next := newEnv(t, Options{Inherited: got})
	next.cluster("be", startBackend(t, lineEcho("be2")))
	next.listener(spec)
	if a := next.addr("l"); a != addr {
		t.Fatalf("new server bound %s, want the inherited %s", a, addr)
	}
	if left := next.srv.CloseUnusedInherited(); len(left) != 0 {
		t.Fatalf("unused inherited sockets %v", left)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := old.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		roundTrip(t, dial(t, addr), "hi\n", "be2:hi\n")
	}
}

// TestHandoffKeyMismatchBindsFresh: a socket named for another address is
// not used; it is reported and closed by CloseUnusedInherited.
func TestHandoffKeyMismatchBindsFresh(t *testing.T) {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	key := HandoffKey("l", ln.Addr().(*net.TCPAddr).AddrPort())
	e := newEnv(t, Options{Inherited: map[string]*net.TCPListener{key: ln}})
	e.cluster("be", startBackend(t, lineEcho("be")))
	e.listener(tcpListener("l", tcpChain("tcp", "be"))) // 127.0.0.1:0
	if e.addr("l") == ln.Addr().String() {
		t.Fatal("listener on 127.0.0.1:0 took a socket keyed for another address")
	}
	left := e.srv.CloseUnusedInherited()
	if len(left) != 1 || left[0] != key {
		t.Fatalf("unused = %v, want [%s]", left, key)
	}
	if _, err := ln.Accept(); err == nil {
		t.Fatal("unused inherited socket still open")
	}
}

// TestReceiveListenersRejectsNonListener: a descriptor that is not a TCP
// listening socket is refused, not served.
func TestReceiveListenersRejectsNonListener(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, b := unixPair(t)
	if err := SendListeners(a, map[string]*os.File{"l@127.0.0.1:1": f}); err != nil {
		t.Fatal(err)
	}
	if _, err := ReceiveListeners(b); err == nil {
		t.Fatal("a regular file was accepted as a listener")
	}
}

// TestSendListenersKeepsSenderNonBlocking: sending a listener must not put
// the shared socket into blocking mode, or the sender's Accept would block
// in the kernel and Close would never wake it (the old process of an
// upgrade could not drain).
func TestSendListenersKeepsSenderNonBlocking(t *testing.T) {
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ln.File()
	if err != nil {
		t.Fatal(err)
	}
	a, b := unixPair(t)
	if err := SendListeners(a, map[string]*os.File{"l@x": f}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	got, err := ReceiveListeners(b)
	if err != nil {
		t.Fatal(err)
	}
	defer got["l@x"].Close()
	accepted := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		accepted <- err
	}()
	time.Sleep(50 * time.Millisecond) // the accept is parked (or stuck in the kernel)
	ln.Close()
	select {
	case <-accepted:
	case <-time.After(2 * time.Second):
		// Unblock the stuck accept through the receiver's copy of the socket.
		if c, err := net.Dial("tcp", got["l@x"].Addr().String()); err == nil {
			c.Close()
		}
		<-accepted
		t.Fatal("Accept did not return after Close: the listener was left in blocking mode")
	}
}
