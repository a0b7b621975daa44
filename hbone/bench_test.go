package hbone

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
)

// sink accepts TCP connections and discards everything.
func startSink(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

const benchChunk = 256 << 10

// BenchmarkUploadHBONE: one tunneled connection, client -> destination.
func BenchmarkUploadHBONE(b *testing.B) {
	sink := startSink(b)
	f := startServer(b, nil)
	c := f.client(b, clientID)
	conn, err := c.Dial(context.Background(), f.key(), sink, Meta{})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	for range b.N {
		if _, err := conn.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUploadTLS: the baseline, one crypto/tls 1.3 connection.
func BenchmarkUploadTLS(b *testing.B) {
	ca := newTestCA(b, "mesh")
	srvCert := ca.issue(b, serverID)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{*srvCert}, MinVersion: tls.VersionTLS13})
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, c)
		c.Close()
	}()
	conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: ca.pool, InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}) //nolint:gosec // benchmark
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	for range b.N {
		if _, err := conn.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
}

// startSource accepts TCP connections and writes to them until they close.
func startSource(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				buf := make([]byte, benchChunk)
				for {
					if _, err := c.Write(buf); err != nil {
						break
					}
				}
				c.Close()
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkDownloadHBONE: one tunneled connection, destination -> client.
func BenchmarkDownloadHBONE(b *testing.B) {
	src := startSource(b)
	f := startServer(b, nil)
	c := f.client(b, clientID)
	conn, err := c.Dial(context.Background(), f.key(), src, Meta{})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	for range b.N {
		if _, err := io.ReadFull(conn, buf); err != nil {
			b.Fatal(err)
		}
	}
}
