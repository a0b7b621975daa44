package hbone

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// StatusError is a CONNECT refused by the server.
type StatusError struct{ Code int }

func (e *StatusError) Error() string {
	return fmt.Sprintf("server answered %d %s", e.Code, http.StatusText(e.Code))
}

// streamConn is the client end of one CONNECT stream as a net.Conn.
//
// Two in-memory pipes sit between the caller and the HTTP/2 stream: they
// give Read and Write real deadlines (the upstream pools poll with read
// deadlines) and CloseWrite a clean END_STREAM, at the cost of one memory
// copy per direction, small next to the TLS work on the same bytes.
type streamConn struct {
	client *Client
	pc     *poolConn

	rd, rdFeed net.Conn // caller reads rd; the pump writes rdFeed
	wr, wrFeed net.Conn // caller writes wr; HTTP/2 reads wrFeed as the request body

	cancel context.CancelFunc
	body   io.ReadCloser
	remote net.Addr

	pumpDone chan struct{}
	pumpErr  error // set before rdFeed closes

	closeOnce sync.Once
}

func openStream(ctx context.Context, c *Client, pc *poolConn, target string, meta Meta) (*streamConn, error) {
	remote, err := net.ResolveTCPAddr("tcp", target)
	if err != nil {
		return nil, fmt.Errorf("target: %w", err)
	}
	s := &streamConn{client: c, pc: pc, remote: remote, pumpDone: make(chan struct{})}
	s.rd, s.rdFeed = net.Pipe()
	s.wr, s.wrFeed = net.Pipe()

	// The stream outlives ctx, which only bounds setup.
	sctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	req := (&http.Request{
		Method:        http.MethodConnect,
		URL:           &url.URL{Host: target},
		Host:          target,
		Header:        make(http.Header, 4),
		Body:          s.wrFeed,
		ContentLength: -1,
		Proto:         "HTTP/2.0",
		ProtoMajor:    2,
	}).WithContext(sctx)
	meta.write(req.Header)

	stop := context.AfterFunc(ctx, cancel)
	resp, err := pc.cc.RoundTrip(req)
	if !stop() {
		err = errors.Join(ctx.Err(), err)
	}
	if err == nil && resp.StatusCode != http.StatusOK {
		err = &StatusError{Code: resp.StatusCode}
	}
	if err != nil {
		if resp != nil {
			resp.Body.Close()
		}
		cancel()
		s.closePipes()
		return nil, err
	}
	s.body = resp.Body
	go s.pump()
	return s, nil
}

// pump moves the response body into the read pipe.
func (s *streamConn) pump() {
	defer close(s.pumpDone)
	bp := bufPool.Get().(*[]byte)
	_, err := io.CopyBuffer(s.rdFeed, s.body, *bp)
	bufPool.Put(bp)
	s.pumpErr = err
	s.rdFeed.Close()
}

func (s *streamConn) Read(p []byte) (int, error) {
	n, err := s.rd.Read(p)
	if err == io.EOF {
		<-s.pumpDone
		if s.pumpErr != nil && !errors.Is(s.pumpErr, io.ErrClosedPipe) {
			return n, fmt.Errorf("hbone stream: %w", s.pumpErr)
		}
	}
	return n, err
}

func (s *streamConn) Write(p []byte) (int, error) { return s.wr.Write(p) }

// CloseWrite ends the request side (END_STREAM): the destination sees FIN
// while the reply keeps flowing.
func (s *streamConn) CloseWrite() error { return s.wr.Close() }

// Close resets the stream if it is still open and frees its pool slot.
func (s *streamConn) Close() error {
	s.closeOnce.Do(func() {
		s.closePipes()
		s.cancel()
		s.body.Close()
		<-s.pumpDone
		s.client.release(s.pc)
	})
	return nil
}

func (s *streamConn) closePipes() {
	s.rd.Close()
	s.rdFeed.Close()
	s.wr.Close()
	s.wrFeed.Close()
}

func (s *streamConn) LocalAddr() net.Addr  { return s.pc.tls.LocalAddr() }
func (s *streamConn) RemoteAddr() net.Addr { return s.remote }

func (s *streamConn) SetDeadline(t time.Time) error {
	return errors.Join(s.rd.SetReadDeadline(t), s.wr.SetWriteDeadline(t))
}
func (s *streamConn) SetReadDeadline(t time.Time) error  { return s.rd.SetReadDeadline(t) }
func (s *streamConn) SetWriteDeadline(t time.Time) error { return s.wr.SetWriteDeadline(t) }
