package dataplane

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// socketPair returns a connected loopback pair: the client end and the end
// HandleAs serves.
func socketPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client = dial(t, ln.Addr().String())
	server, err = ln.AcceptTCP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server
}

// HandleAs serves a connection on the listener for its destination, and
// the bytes handed over as pre are what the HTTP inspector and the
// upstream see first.
func TestHandleAs(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("http", startBackend(t, greet("http:")))
	e.cluster("raw", startBackend(t, greet("raw:")))
	vip := netip.MustParseAddrPort("10.96.0.10:9000")
	httpChain := tcpChain("http", "http")
	httpChain.Match.ApplicationProtocols = []string{"http/1.1"}
	e.listener(&state.Listener{Name: "vip", Address: vip, FilterChains: []*state.FilterChain{httpChain, tcpChain("raw", "raw")}})

	for _, tt := range []struct {
		name, pre, then, want string
	}{
		{"pre decides the chain", "GET / HTTP/1.1\r\n", "Host: x\r\n\r\n", "http:GET / HTTP/1.1\r\nHost: x\r\n\r\n"},
		{"no pre", "", "hello", "raw:hello"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			client, server := socketPair(t)
			done := make(chan error, 1)
			go func() { done <- e.srv.HandleAs(server, []byte(tt.pre), netip.MustParseAddrPort("127.0.0.1:5555"), vip) }()
			if _, err := client.Write([]byte(tt.then)); err != nil {
				t.Fatal(err)
			}
			_ = client.CloseWrite()
			got, err := io.ReadAll(client)
			if err != nil || string(got) != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
			if err := <-done; err != nil {
				t.Fatalf("HandleAs: %v", err)
			}
		})
	}

	t.Run("no listener", func(t *testing.T) {
		other := netip.MustParseAddrPort("10.96.0.11:9000")
		if e.srv.Serves(other) {
			t.Fatal("Serves(unknown) = true without a capture listener")
		}
		_, server := socketPair(t)
		if err := e.srv.HandleAs(server, nil, netip.AddrPort{}, other); !errors.Is(err, ErrNoListener) {
			t.Fatalf("HandleAs(unknown) = %v, want ErrNoListener", err)
		}
		// A capture listener's own chains take unmatched destinations,
		// as they would for a captured connection (passthrough).
		capture := tcpListener("capture", tcpChain("raw", "raw"))
		capture.UseOriginalDst = true
		e.listener(capture)
		if !e.srv.Serves(other) {
			t.Fatal("Serves(unknown) = false with a capture listener")
		}
		client, server := socketPair(t)
		go func() { _ = e.srv.HandleAs(server, nil, netip.AddrPort{}, other) }()
		roundTrip(t, client, "x", "raw:x")
	})
}
