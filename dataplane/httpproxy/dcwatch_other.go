//go:build !unix

package httpproxy

import "net"

func watchClosed(net.Conn, *dcWatch, func(bool)) bool { return false }
