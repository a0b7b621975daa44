package hbone

import (
	"io"
	"net"
	"net/http"
	"sync"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// writerOnly hides a TCPConn's ReadFrom so io.CopyBuffer uses our large
// buffer instead of net's 32 KiB generic path.
type writerOnly struct{ io.Writer }

// closeWriter is implemented by *net.TCPConn, *tls.Conn and our streams.
type closeWriter interface{ CloseWrite() error }

// spliceServer copies a CONNECT stream to and from up.
//
// Client to destination keeps TCP semantics: the client's END_STREAM
// becomes a FIN to the destination (CloseWrite) while the destination's
// answer keeps flowing back. The other direction cannot half-close: the
// x/net HTTP/2 server ends a stream's response only by returning from the
// handler, and then resets the request side (RST_STREAM NO_ERROR, RFC 9113
// 8.1). So when the destination closes first, the client reads EOF and
// later writes fail, as if the destination had closed both directions.
func spliceServer(w http.ResponseWriter, r *http.Request, up net.Conn) {
	rc := http.NewResponseController(w)
	upload := make(chan struct{})
	go func() {
		defer close(upload)
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		_, err := io.CopyBuffer(writerOnly{up}, r.Body, *bp)
		if err != nil {
			// Reset or connection loss: abort the destination too, which
			// also unblocks the download loop below.
			up.Close()
			return
		}
		if cw, ok := up.(closeWriter); ok {
			_ = cw.CloseWrite()
		} else {
			up.Close()
		}
	}()

	bp := bufPool.Get().(*[]byte)
	buf := *bp
	for {
		n, err := up.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				break
			}
			// Flush per read: tunneled protocols are often interactive.
			if rc.Flush() != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	bufPool.Put(bp)
	// Unblock the upload goroutine if the client is still sending, then
	// wait for it: the handler must not return while it uses r.Body.
	r.Body.Close()
	up.Close()
	<-upload
}
