package node

import (
	"context"
	"io"
	"net"
	"sync"
	"time"
)

type closeWriter interface{ CloseWrite() error }

// pipe copies both directions until both are done, forwarding a FIN as a
// half-close so request/response protocols that shut down their write
// side keep working. Cancelling ctx closes both connections. Plain TCP on
// both sides keeps io.Copy's splice path (no idle timeout wrapper).
func pipe(ctx context.Context, a, b net.Conn, idle time.Duration) {
	stop := context.AfterFunc(ctx, func() {
		a.Close()
		b.Close()
	})
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); half(b, a, idle) }()
	go func() { defer wg.Done(); half(a, b, idle) }()
	wg.Wait()
}

// half copies src to dst, then half-closes dst; on an error it closes
// both so the other direction ends too.
func half(dst, src net.Conn, idle time.Duration) {
	var r io.Reader = src
	if idle > 0 {
		r = &idleReader{c: src, idle: idle}
	}
	_, err := io.Copy(dst, r)
	if err != nil {
		src.Close()
		dst.Close()
		return
	}
	if cw, ok := dst.(closeWriter); ok {
		if cw.CloseWrite() == nil {
			return
		}
	}
	dst.Close()
}

// idleReader extends the read deadline before each read, so a connection
// silent in this direction for idle ends.
type idleReader struct {
	c    net.Conn
	idle time.Duration
}

func (r *idleReader) Read(p []byte) (int, error) {
	_ = r.c.SetReadDeadline(time.Now().Add(r.idle))
	return r.c.Read(p)
}
