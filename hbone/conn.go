package hbone

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
)

// StatusError is a CONNECT refused by the server.
type StatusError struct{ Code int }

func (e *StatusError) Error() string {
	return fmt.Sprintf("server answered %d %s", e.Code, http.StatusText(e.Code))
}

// clientConn is the client end of one CONNECT stream; closing it also
// frees its slot in the pool.
type clientConn struct {
	*stream
	client *Client
	pc     *poolConn
	once   sync.Once
}

func (c *clientConn) Close() error {
	err := c.stream.Close()
	c.once.Do(func() { c.client.release(c.pc) })
	return err
}

// openStream sends a CONNECT for target on pc and waits for a 2xx. ctx
// bounds only this setup; the stream lives until closed.
func openStream(ctx context.Context, pc *poolConn, target string, meta Meta, extra http.Header) (*stream, error) {
	remote, err := net.ResolveTCPAddr("tcp", target)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	h := make(http.Header, 3+len(extra))
	for k, vs := range extra {
		h[k] = vs
	}
	meta.write(h)
	s, err := pc.mux.openStream(target, h)
	if err != nil {
		return nil, err
	}
	s.local, s.peer = pc.tls.LocalAddr(), remote
	select {
	case <-s.respc:
	case <-ctx.Done():
		s.Close()
		return nil, ctx.Err()
	}
	m := pc.mux
	m.mu.Lock()
	status, rerr := s.status, s.rerr
	m.mu.Unlock()
	if rerr != nil && status == 0 {
		s.Close()
		return nil, rerr
	}
	if status < 200 || status > 299 {
		s.Close()
		return nil, &StatusError{Code: status}
	}
	return s, nil
}
