package whitebox

import (
	"errors"
	"net"
)

// tcpPair returns the two ends of a fresh loopback TCP connection. The data
// plane serves *net.TCPConn connections (splice, kernel idle tracking, drain
// bookkeeping), so requests proxied in absolute form reach it over such a
// pair; the HTTP client pools them, so this is paid once per pooled
// connection, not per request.
func tcpPair() (client, server *net.TCPConn, err error) {
	ln, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, nil, err
	}
	defer ln.Close()
	client, err = net.DialTCP("tcp4", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		return nil, nil, err
	}
	want := client.LocalAddr().(*net.TCPAddr).AddrPort()
	// The handshake completed into the backlog, so Accept does not block;
	// another local process may have raced us onto the ephemeral port, so
	// only the connection from our own client is kept.
	for range 8 {
		c, err := ln.AcceptTCP()
		if err != nil {
			client.Close()
			return nil, nil, err
		}
		if c.RemoteAddr().(*net.TCPAddr).AddrPort() == want {
			_ = client.SetNoDelay(true)
			return client, c, nil
		}
		c.Close()
	}
	client.Close()
	return nil, nil, errors.New("loopback pair: foreign connections on the pairing socket")
}
