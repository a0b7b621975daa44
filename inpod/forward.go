package inpod

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Forwarder is a Handler that connects each captured connection to where it
// was headed, from inside the pod's netns, and copies bytes both ways: the
// pod's traffic goes through the proxy without being changed. It is what a
// node proxy without mesh configuration does, and the fallback while none
// is wired. HBONE connections are refused (closed): answering them needs
// certificates.
type Forwarder struct {
	// DialTimeout bounds the upstream connect (default 5s).
	DialTimeout time.Duration
	Log         *slog.Logger
}

func (f *Forwarder) Outbound(p *Pod, c *net.TCPConn, dst netip.AddrPort) {
	f.forward(p, c, dst, netip.Addr{})
}

// Inbound delivers from the client's address (Pod.DialFrom).
func (f *Forwarder) Inbound(p *Pod, c *net.TCPConn, dst netip.AddrPort) {
	f.forward(p, c, dst, c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr())
}

func (f *Forwarder) HBONE(_ *Pod, c *net.TCPConn) { c.Close() }

func (f *Forwarder) forward(p *Pod, c *net.TCPConn, dst netip.AddrPort, src netip.Addr) {
	defer c.Close()
	timeout := f.DialTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	up, err := p.DialFrom(ctx, src, "tcp", dst.String())
	cancel()
	if err != nil {
		if f.Log != nil {
			f.Log.Debug("in-pod forward: dial", "pod", p.String(), "dst", dst, "err", err)
		}
		return
	}
	defer up.Close()
	Splice(c, up.(*net.TCPConn))
}

// Splice copies both ways until each direction ends, passing half-closes
// on (splice(2) between TCP sockets on Linux).
func Splice(a, b *net.TCPConn) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(b, a)
		_ = b.CloseWrite()
	}()
	_, _ = io.Copy(a, b)
	_ = a.CloseWrite()
	wg.Wait()
}
