package echo

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"
)

// HeaderVersion is the response header (and gRPC header metadata key) that
// names the backend version.
const HeaderVersion = "x-echo-version"

// Server is one versioned backend: HTTP on HTTPAddr, gRPC on GRPCAddr.
type Server struct {
	Version  string
	HTTPAddr *net.TCPAddr
	GRPCAddr *net.TCPAddr

	http  *http.Server
	grpc  *grpc.Server
	stats *stats
	done  chan struct{}
}

// Start starts a backend answering as version on two ephemeral loopback
// ports.
func Start(version string) (*Server, error) {
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("echo %s: http listen: %w", version, err)
	}
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		hl.Close()
		return nil, fmt.Errorf("echo %s: grpc listen: %w", version, err)
	}
	st := newStats()
	s := &Server{
		Version:  version,
		HTTPAddr: hl.Addr().(*net.TCPAddr),
		GRPCAddr: gl.Addr().(*net.TCPAddr),
		http:     newHTTPServer(version, st),
		grpc:     newGRPCServer(version),
		stats:    st,
		done:     make(chan struct{}, 2),
	}
	go func() {
		_ = s.http.Serve(hl) // returns ErrServerClosed on Close
		s.done <- struct{}{}
	}()
	go func() {
		_ = s.grpc.Serve(gl)
		s.done <- struct{}{}
	}()
	return s, nil
}

// Close stops both servers, closing open connections, and waits for them.
func (s *Server) Close() error {
	err := s.http.Close()
	s.grpc.Stop()
	timeout := time.After(5 * time.Second)
	for range 2 {
		select {
		case <-s.done:
		case <-timeout:
			return fmt.Errorf("echo %s: servers did not stop", s.Version)
		}
	}
	return err
}
