package hbone

import (
	"io"
	"net"
	"sync"
)

var bufPool = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyBufSize is the relay buffer: large reads from TCP become few large
// DATA frames.
const copyBufSize = 256 << 10

// closeWriter is implemented by *net.TCPConn, *tls.Conn and our streams.
type closeWriter interface{ CloseWrite() error }

// relay copies a CONNECT stream to and from its destination with TCP
// semantics in both directions: either side's end (END_STREAM or FIN)
// becomes the other side's end while the opposite direction keeps flowing.
// An error on either side, or a reset of the stream, aborts both.
//
// It returns the bytes copied from the stream (received) and to it (sent).
func relay(st *stream, up net.Conn) (received, sent int64) {
	errc := make(chan error, 2)
	go func() {
		var err error
		received, err = copyHalf(up, st)
		errc <- err
	}()
	go func() {
		var err error
		sent, err = copyHalf(st, up)
		errc <- err
	}()
	dead := st.dead
	for pending := 2; pending > 0; {
		select {
		case err := <-errc:
			pending--
			if err != nil {
				st.Close()
				up.Close()
			}
		case <-dead:
			// Reset by the peer or the tunnel died: nothing more can be
			// delivered either way, so the destination is closed too,
			// which ends a copy blocked on it.
			dead = nil
			up.Close()
		}
	}
	st.Close()
	up.Close()
	return received, sent
}

// copyHalf copies src to dst until src's end, then ends dst's write side.
func copyHalf(dst, src net.Conn) (int64, error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	buf := *bp
	var total int64
	for {
		n, err := src.Read(buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			if cw, ok := dst.(closeWriter); ok {
				return total, cw.CloseWrite()
			}
			return total, dst.Close()
		}
		if err != nil {
			return total, err
		}
	}
}
