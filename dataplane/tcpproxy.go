package dataplane

import (
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/meshlet/meshlet/dataplane/httpproxy"
	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/policy"
	"github.com/meshlet/meshlet/state"
)

// serveTCP is the tcp_proxy network filter: pick a cluster and a host,
// connect, then copy both ways until both sides are done. Failures close
// the downstream connection, as Envoy does (NC, UH, UF).
func (l *listener) serveTCP(down net.Conn, chain *chainRuntime, info *httpproxy.ConnInfo) {
	tp := chain.spec.TCPProxy
	rec := l.s.tcpRecord(info, tp)
	defer rec.finish()
	var life *tcpLifetime
	if d := tp.MaxDownstreamConnectionDuration; d > 0 {
		life = startTCPLifetime(d, down)
		defer life.stop()
	}
	name := tp.Cluster
	if len(tp.WeightedClusters) > 0 {
		wc := policy.PickWeighted(tp.WeightedClusters, chain.total, rand.Uint64())
		if wc == nil {
			l.stats.noCluster.Add(1)
			rec.fail(httpproxy.FlagNoCluster)
			return
		}
		name = wc.Name
	}
	rec.cluster(name)
	var c *upstream.Cluster
	if l.s.clusters != nil {
		c = l.s.clusters.Cluster(name)
	}
	if c == nil {
		l.stats.noCluster.Add(1)
		rec.fail(httpproxy.FlagNoCluster)
		return
	}
	release, ok := c.Acquire(upstream.ResourceConnections) // UO; the cluster counts the overflow
	if !ok {
		rec.fail("UO")
		return
	}
	defer release()
	var up net.Conn
	if c.Spec().Type == state.ClusterOriginalDst {
		// ORIGINAL_DST: the host is where the client meant to go.
		conn, err := c.DialAddr(l.hard, info.OriginalDst) // binds and marks like every upstream dial
		if err != nil {
			l.stats.connectFail.Add(1)
			rec.fail(httpproxy.FlagUpstreamConnFailure)
			return
		}
		up = conn
		if rec != nil {
			rec.connected(info.OriginalDst.String())
		}
	} else {
		h, err := c.Pick(&lb.PickInfo{})
		if err != nil {
			l.stats.noHealthy.Add(1)
			rec.fail(httpproxy.FlagNoHealthyUpstream)
			return
		}
		h.Acquire()
		defer h.Release()
		// The source travels to an HBONE tunnel as forwarded: for= (hbone_meta.go).
		up, err = c.Dial(upstream.WithDownstream(l.hard, upstream.Downstream{Source: info.Remote.Addr()}), h)
		if err != nil {
			l.stats.connectFail.Add(1)
			c.ReportLocal(h, upstream.ConnectFailure)
			rec.fail(httpproxy.FlagUpstreamConnFailure)
			return
		}
		c.ReportConnected(h)
		rec.connected(h.Address)
	}
	defer up.Close()
	life.setUp(up)
	rec.bytes(pipe(down, up, tp.IdleTimeout))
}

// tcpLifetime is tcp_proxy's max_downstream_connection_duration: when it
// passes, the downstream connection and the upstream one (once dialled)
// are closed, whatever is in flight. Closing both ends pipe's copies even
// when one direction already half-closed.
type tcpLifetime struct {
	timer *time.Timer
	mu    sync.Mutex
	down  net.Conn
	up    net.Conn
	fired bool
}

// startTCPLifetime arms the limit for down, counted from now (the filter
// taking the connection, as Envoy's onNewConnection).
func startTCPLifetime(d time.Duration, down net.Conn) *tcpLifetime {
	t := &tcpLifetime{down: down}
	t.timer = time.AfterFunc(d, t.expire)
	return t
}

func (t *tcpLifetime) expire() {
	t.mu.Lock()
	t.fired = true
	up := t.up
	t.mu.Unlock()
	_ = t.down.Close()
	if up != nil {
		_ = up.Close()
	}
}

// setUp registers the upstream connection; it is closed at once when the
// limit passed while it was being dialled. Nil-safe (no limit).
func (t *tcpLifetime) setUp(up net.Conn) {
	if t == nil {
		return
	}
	t.mu.Lock()
	t.up = up
	fired := t.fired
	t.mu.Unlock()
	if fired {
		_ = up.Close()
	}
}

func (t *tcpLifetime) stop() { t.timer.Stop() }

// pipe copies down->up and up->down. When one direction reaches EOF the
// write side of the other connection is shut (half-close) and the other
// direction keeps going; an error in either direction, or idle timeout,
// closes both. It returns when both directions are done, with the bytes
// read from down and written to down.
func pipe(down, up net.Conn, idle time.Duration) (received, sent int64) {
	closeBoth := sync.OnceFunc(func() {
		_ = down.Close()
		_ = up.Close()
	})
	defer closeBoth()
	downR, upR := down, up
	if idle > 0 {
		w := &idleWatch{timeout: idle, onIdle: closeBoth}
		now := time.Now()
		downR = w.watch(0, down, now)
		upR = w.watch(1, up, now)
		w.start()
		defer w.stop()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		received = copyHalf(up, downR, closeBoth)
	}()
	sent = copyHalf(down, upR, closeBoth)
	<-done
	return received, sent
}

// copyHalf copies src to dst with io.Copy, which splices between TCP
// sockets (replayConn keeps that possible), then propagates EOF as a
// half-close.
func copyHalf(dst net.Conn, src io.Reader, closeBoth func()) int64 {
	n, err := io.Copy(dst, src)
	if err != nil {
		closeBoth()
		return n
	}
	if err := closeWrite(dst); err != nil {
		closeBoth()
	}
	return n
}

type closeWriter interface{ CloseWrite() error }

// closeWrite shuts the write side of c: close_notify then FIN for TLS.
func closeWrite(c net.Conn) error {
	if tc, ok := c.(*tls.Conn); ok {
		err := tc.CloseWrite()
		if cw, ok := tc.NetConn().(closeWriter); ok {
			err = errors.Join(err, cw.CloseWrite())
		}
		return err
	}
	if cw, ok := c.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return errors.New("connection cannot half-close")
}

// tcpOf returns the TCP socket under c when reads from c are plain socket
// reads (nil for TLS).
func tcpOf(c net.Conn) *net.TCPConn {
	switch v := c.(type) {
	case *net.TCPConn:
		return v
	case *replayConn:
		return v.TCPConn
	}
	return nil
}
