package inpod

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshlet/meshlet/capture"
)

// podProxy is one pod being served: its listeners inside the pod's netns,
// the redirection programmed there, and the connections in flight.
type podProxy struct {
	pod   *Pod
	redir capture.Redirector // nil until installed
	ret   *returnPath        // original-source return path; nil when none
	log   *slog.Logger

	listeners []*net.TCPListener
	accepting sync.WaitGroup // accept loops

	mu     sync.Mutex
	conns  map[*net.TCPConn]struct{}
	active sync.WaitGroup // handler calls
	closed bool

	stats PodStats
}

// PodStats counts a pod's accepted connections by listener.
type PodStats struct {
	Outbound, Inbound, HBONE atomic.Int64
}

// kind is which listener accepted a connection.
type kind int

const (
	kindOutbound kind = iota
	kindInbound
	kindHBONE
)

func (k kind) String() string {
	return [...]string{"outbound", "inbound", "hbone"}[k]
}

// startPod opens the pod's listeners inside its netns, starts accepting,
// then programs the redirection (in this order, so a captured connection
// never finds the port closed). On error everything it did is undone; the
// caller keeps ownership of the netns file.
func (s *Server) startPod(pod *Pod) (_ *podProxy, err error) {
	pp := &podProxy{pod: pod, conns: map[*net.TCPConn]struct{}{}, log: s.log.With("pod", pod.String(), "uid", pod.UID)}
	defer func() {
		if err != nil {
			pp.closeListeners()
			pp.accepting.Wait()
		}
	}()
	ports := s.ports
	tproxy := s.opts.CaptureConfig.Inbound == capture.InboundTProxy
	// Decided before the first connection is accepted: handlers read it.
	pod.origSrc = s.origSrcFor()
	type spec struct {
		addr        string
		k           kind
		transparent bool
		optional    bool
	}
	specs := []spec{
		// Outbound only on loopback: REDIRECT of locally generated traffic
		// lands on 127.0.0.1 / ::1, and nothing outside the pod can reach
		// it (which would loop through the outbound path).
		{net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports.Outbound))), kindOutbound, false, false},
		// A pod without IPv6 has no ::1; that is fine.
		{net.JoinHostPort("::1", strconv.Itoa(int(ports.Outbound))), kindOutbound, false, true},
		{":" + strconv.Itoa(int(ports.Inbound)), kindInbound, tproxy, false},
		{":" + strconv.Itoa(int(ports.HBONE)), kindHBONE, false, false},
	}
	for _, sp := range specs {
		ln, err := listenIn(pod.netns, sp.addr, sp.transparent)
		if err != nil {
			if sp.optional {
				continue
			}
			return nil, fmt.Errorf("%s listener %s in pod netns: %w", sp.k, sp.addr, err)
		}
		pp.listeners = append(pp.listeners, ln)
		pp.accepting.Add(1)
		go pp.acceptLoop(s, ln, sp.k)
	}
	if s.opts.Capture != "" && s.opts.Capture != capture.BackendNone {
		cfg := s.opts.CaptureConfig
		cfg.OutboundPort = ports.Outbound
		cfg.InboundPort = ports.Inbound
		if cfg.ProxyMark == 0 {
			cfg.ProxyMark = capture.DefaultProxyMark
		}
		// Connections to the proxy's own ports reach them unchanged: HBONE
		// from other nodes must not be turned into plaintext inbound.
		cfg.InboundExcludePorts = appendMissing(cfg.InboundExcludePorts, ports.HBONE, ports.Inbound, ports.Outbound)
		r, err := capture.New(s.opts.Capture, cfg)
		if err != nil {
			return nil, err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := r.Install(ctx, pod.Netns()); err != nil {
			return nil, fmt.Errorf("capture %s in pod netns: %w", r.Name(), err)
		}
		if pod.origSrc {
			// After the redirection: its install clears the tables.
			rp := newReturnPath(r.Name(), pod.mark)
			if rp == nil {
				_ = r.Remove(context.WithoutCancel(ctx))
				return nil, fmt.Errorf("capture %s: no return path for original-source delivery", r.Name())
			}
			if err := rp.install(ctx, pod.netns); err != nil {
				_ = r.Remove(context.WithoutCancel(ctx))
				return nil, err
			}
			pp.ret = rp
		}
		pp.redir = r
	}
	return pp, nil
}

// origSrcFor reports whether pods deliver inbound connections from the
// client's address: unless disabled, when the return path is programmed by
// us (a netfilter capture backend) or by the agent (no capture: istio-cni
// installs it with its own rules, keyed on the same proxy mark).
func (s *Server) origSrcFor() bool {
	if s.opts.NoOriginalSource {
		return false
	}
	switch s.opts.Capture {
	case "", capture.BackendNone, capture.BackendIPTables, capture.BackendIPTablesLegacy, capture.BackendIPTablesNFT, capture.BackendNFTables:
		return true
	}
	return false
}

func appendMissing(ps []uint16, add ...uint16) []uint16 {
	out := append([]uint16(nil), ps...)
next:
	for _, a := range add {
		for _, p := range out {
			if p == a {
				continue next
			}
		}
		out = append(out, a)
	}
	return out
}

func (pp *podProxy) acceptLoop(s *Server, ln *net.TCPListener, k kind) {
	defer pp.accepting.Done()
	var delay time.Duration
	for {
		c, err := ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: back off instead of spinning.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			pp.log.Warn("accept", "listener", k.String(), "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !pp.track(c) {
			c.Close()
			return
		}
		go pp.serve(s.opts.Handler, s.ports, c, k)
	}
}

func (pp *podProxy) track(c *net.TCPConn) bool {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	if pp.closed {
		return false
	}
	pp.conns[c] = struct{}{}
	pp.active.Add(1)
	return true
}

func (pp *podProxy) serve(h Handler, ports Ports, c *net.TCPConn, k kind) {
	defer func() {
		pp.mu.Lock()
		delete(pp.conns, c)
		pp.mu.Unlock()
		pp.active.Done()
	}()
	switch k {
	case kindHBONE:
		pp.stats.HBONE.Add(1)
		h.HBONE(pp.pod, c)
		return
	case kindOutbound:
		pp.stats.Outbound.Add(1)
	case kindInbound:
		pp.stats.Inbound.Add(1)
	}
	dst, err := capture.OriginalDst(c)
	if err != nil || ports.own(dst.Port()) {
		// Dialed our port directly (nothing was redirected): forwarding
		// would come straight back here.
		c.Close()
		return
	}
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if k == kindOutbound {
		h.Outbound(pp.pod, c, dst)
		return
	}
	h.Inbound(pp.pod, c, dst)
}

// closeListeners stops accepting; open connections go on.
func (pp *podProxy) closeListeners() {
	for _, ln := range pp.listeners {
		ln.Close()
	}
}

// stop removes the rules (new connections go where they were headed),
// closes the listeners, and returns once open connections have ended or
// ctx is done, when the rest are closed. The netns file is closed last:
// handlers dial through it until then.
func (pp *podProxy) stop(ctx context.Context, h Handler) error {
	var err error
	if pp.redir != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		if rerr := pp.redir.Remove(rctx); rerr != nil {
			err = fmt.Errorf("remove capture: %w", rerr)
		}
		cancel()
	}
	pp.closeListeners()
	pp.accepting.Wait()
	pp.mu.Lock()
	pp.closed = true
	pp.mu.Unlock()
	done := make(chan struct{})
	go func() { pp.active.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		pp.mu.Lock()
		for c := range pp.conns {
			c.Close()
		}
		pp.mu.Unlock()
		<-done
	}
	// The return path goes only now: replies of connections delivered
	// from their client's address needed it until they ended.
	if pp.ret != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		if rerr := pp.ret.remove(rctx, pp.pod.netns); rerr != nil {
			err = errors.Join(err, rerr)
		}
		cancel()
	}
	if pr, ok := h.(PodRemover); ok {
		pr.PodRemoved(pp.pod)
	}
	pp.pod.netns.Close()
	return err
}

// netnsIs reports whether f names the namespace this pod runs in.
func (pp *podProxy) netnsIs(f *os.File) bool { return sameNetns(pp.pod.netns, f) }
