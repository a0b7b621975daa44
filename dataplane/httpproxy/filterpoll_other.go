//go:build !unix

package httpproxy

import "net"

func canPollClosed(net.Conn) bool { return false }

func peerClosed(net.Conn) bool { return false }
