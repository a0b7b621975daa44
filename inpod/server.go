package inpod

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/meshlet/meshlet/capture"
)

// Options configure a Server.
type Options struct {
	// SocketPath is the Unix SEQPACKET socket the agent connects to
	// (Listen) or that the agent serves (Connect); DefaultSocketPath when
	// empty.
	SocketPath string
	// Handler serves accepted connections; required.
	Handler Handler
	// Ports of the listeners in each pod.
	Ports Ports
	// Capture is the capture backend programmed in each pod's netns
	// (capture.BackendIPTables, BackendNFTables, ...); "" or "none" leaves
	// the pod's rules to someone else (istio-cni programs them itself).
	Capture string
	// CaptureConfig is the base of each pod's capture.Config; the ports
	// come from Ports, the proxy's own ports are excluded inbound, and the
	// proxy mark (0x539 by default) is set on Pod.DialContext sockets.
	CaptureConfig capture.Config
	// NoOriginalSource delivers inbound connections from the pod's own
	// address. By default (as ztunnel) they come from the client's address
	// (Pod.DialFrom): with a netfilter Capture the Server programs the
	// return path for the pod's replies (ReturnMark, ReturnTable); with
	// none the agent must (istio-cni does, keyed on the proxy mark).
	NoOriginalSource bool
	// DrainTimeout bounds how long a deleted pod's open connections may
	// finish (default 10s); Close uses its context's deadline.
	DrainTimeout time.Duration
	Log          *slog.Logger
}

// Server serves pods handed over by the node agent.
type Server struct {
	opts  Options
	ports Ports
	log   *slog.Logger
	mark  uint32

	mu       sync.Mutex
	pods     map[string]*podProxy
	sessions map[*net.UnixConn]struct{}
	ln       *net.UnixListener
	closed   bool
	bg       sync.WaitGroup // accept loop, sessions, pod drains
	// drainCtx bounds background drains of deleted pods; Close cancels it
	// when its own context ends.
	drainCtx    context.Context
	cancelDrain context.CancelFunc
}

// New returns a Server; Listen or Connect starts it.
func New(opts Options) (*Server, error) {
	if opts.Handler == nil {
		return nil, errors.New("inpod: Options.Handler is required")
	}
	if opts.SocketPath == "" {
		opts.SocketPath = DefaultSocketPath
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 10 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	mark := opts.CaptureConfig.ProxyMark
	if mark == 0 {
		mark = capture.DefaultProxyMark
	}
	s := &Server{
		opts: opts, ports: opts.Ports.withDefaults(), log: opts.Log, mark: mark,
		pods: map[string]*podProxy{}, sessions: map[*net.UnixConn]struct{}{},
	}
	s.drainCtx, s.cancelDrain = context.WithCancel(context.Background())
	return s, nil
}

// Listen binds the socket (replacing a stale one a crashed run left) and
// serves agents that connect, one session each, until Close.
func (s *Server) Listen() error {
	path := s.opts.SocketPath
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("inpod: socket dir: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return fmt.Errorf("inpod: %s exists and is not a socket", path)
		}
		_ = os.Remove(path)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return fmt.Errorf("inpod: listen %s: %w", path, err)
	}
	// Only root (the node agent) may hand us namespaces.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return fmt.Errorf("inpod: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return errors.New("inpod: server closed")
	}
	s.ln = ln
	s.bg.Add(1)
	s.mu.Unlock()
	go s.acceptLoop(ln)
	s.log.Info("in-pod socket listening", "path", path)
	return nil
}

func (s *Server) acceptLoop(ln *net.UnixListener) {
	defer s.bg.Done()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("in-pod accept", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		if !s.startSession(c) {
			c.Close()
			return
		}
	}
}

// Connect dials an agent that serves the socket (istio-cni's own ZDS
// server, as ztunnel does) and keeps reconnecting with backoff until ctx
// ends or the Server is closed.
func (s *Server) Connect(ctx context.Context) {
	const minBackoff, maxBackoff = 100 * time.Millisecond, 5 * time.Second
	backoff := minBackoff
	for ctx.Err() == nil {
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: s.opts.SocketPath, Net: "unixpacket"})
		if err == nil {
			start := time.Now()
			done := make(chan struct{})
			stop := context.AfterFunc(ctx, func() { c.Close() })
			if !s.startSessionNotify(c, done) {
				stop()
				c.Close()
				return // closed
			}
			<-done
			stop()
			// A session that lasted was healthy: start the backoff over.
			if time.Since(start) > maxBackoff {
				backoff = minBackoff
			}
		} else {
			s.log.Debug("in-pod agent not reachable", "path", s.opts.SocketPath, "err", err, "retry_in", backoff)
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxBackoff)
	}
}

func (s *Server) startSession(c *net.UnixConn) bool { return s.startSessionNotify(c, nil) }

func (s *Server) startSessionNotify(c *net.UnixConn, done chan struct{}) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.sessions[c] = struct{}{}
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		if done != nil {
			defer close(done)
		}
		s.serveSession(c)
		s.mu.Lock()
		delete(s.sessions, c)
		s.mu.Unlock()
		c.Close()
	}()
	return true
}

// PodStatus describes one served pod.
type PodStatus struct {
	UID  string
	Info WorkloadInfo
	// Listeners are the bound addresses inside the pod's netns.
	Listeners []string
	// Capture is the backend that programmed the pod's netns, "" when none.
	Capture string
	// Connections accepted so far, by listener.
	Outbound, Inbound, HBONE int64
}

// Pods reports the pods being served, by UID.
func (s *Server) Pods() []PodStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]PodStatus, 0, len(s.pods))
	for _, pp := range s.pods {
		st := PodStatus{UID: pp.pod.UID, Info: pp.pod.Info,
			Outbound: pp.stats.Outbound.Load(), Inbound: pp.stats.Inbound.Load(), HBONE: pp.stats.HBONE.Load()}
		for _, ln := range pp.listeners {
			st.Listeners = append(st.Listeners, ln.Addr().String())
		}
		if pp.redir != nil {
			st.Capture = pp.redir.Name()
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b PodStatus) int {
		if a.UID < b.UID {
			return -1
		}
		if a.UID > b.UID {
			return 1
		}
		return 0
	})
	return out
}

// addPod serves a pod in netns (which the Server then owns). Re-adding a
// UID with the same netns keeps the running pod; with another netns (the
// pod sandbox was recreated) the old one is stopped first.
func (s *Server) addPod(uid string, info WorkloadInfo, netns *os.File) error {
	if err := checkNetns(netns); err != nil {
		netns.Close()
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		netns.Close()
		return errors.New("server closed")
	}
	old := s.pods[uid]
	if old != nil && old.netnsIs(netns) {
		// Pods are immutable while handlers use them; a running pod's
		// name and service account cannot change anyway.
		s.mu.Unlock()
		netns.Close()
		return nil
	}
	delete(s.pods, uid)
	s.mu.Unlock()
	if old != nil {
		s.drainPod(old)
	}
	pod := &Pod{UID: uid, Info: info, netns: netns, mark: s.mark}
	pp, err := s.startPod(pod)
	if err != nil {
		netns.Close()
		return err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = pp.stop(ctx, s.opts.Handler)
		cancel()
		return errors.New("server closed")
	}
	s.pods[uid] = pp
	s.mu.Unlock()
	pp.log.Info("pod added", "listeners", len(pp.listeners), "capture", s.opts.Capture)
	return nil
}

// hasPod reports whether uid is being served.
func (s *Server) hasPod(uid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pods[uid] != nil
}

// delPod stops serving uid: rules and listeners go now, its connections
// drain in the background. Unknown UIDs are not an error (the agent may
// repeat itself after a reconnect).
func (s *Server) delPod(uid string) error {
	s.mu.Lock()
	pp := s.pods[uid]
	delete(s.pods, uid)
	s.mu.Unlock()
	if pp == nil {
		return nil
	}
	return s.drainPod(pp)
}

// drainPod removes the pod's rules and listeners synchronously (the ack
// means they are gone) and lets its connections finish within the drain
// timeout in the background.
func (s *Server) drainPod(pp *podProxy) error {
	var rerr error
	if pp.redir != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		rerr = pp.redir.Remove(ctx)
		cancel()
		pp.redir = nil
	}
	pp.closeListeners()
	pp.accepting.Wait()
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		ctx, cancel := context.WithTimeout(s.drainCtx, s.opts.DrainTimeout)
		defer cancel()
		_ = pp.stop(ctx, s.opts.Handler)
		pp.log.Info("pod removed")
	}()
	if rerr != nil {
		return fmt.Errorf("pod %s: remove capture: %w", pp.pod.UID, rerr)
	}
	return nil
}

// reconcile drops every pod not in keep (after a snapshot).
func (s *Server) reconcile(keep map[string]bool) {
	s.mu.Lock()
	var gone []*podProxy
	for uid, pp := range s.pods {
		if !keep[uid] {
			gone = append(gone, pp)
			delete(s.pods, uid)
		}
	}
	s.mu.Unlock()
	for _, pp := range gone {
		if err := s.drainPod(pp); err != nil {
			s.log.Warn("snapshot reconcile", "err", err)
		}
	}
}

// Close stops the socket and every session, then stops every pod: rules
// removed, listeners closed, connections drained until ctx ends and closed
// after that.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.ln != nil {
		s.ln.Close()
	}
	for c := range s.sessions {
		c.Close()
	}
	pods := s.pods
	s.pods = map[string]*podProxy{}
	s.mu.Unlock()

	stopDrains := context.AfterFunc(ctx, s.cancelDrain)
	defer func() {
		stopDrains()
		s.cancelDrain()
	}()
	var errs []error
	var wg sync.WaitGroup
	var emu sync.Mutex
	for _, pp := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := pp.stop(ctx, s.opts.Handler); err != nil {
				emu.Lock()
				errs = append(errs, fmt.Errorf("pod %s: %w", pp.pod.UID, err))
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	s.bg.Wait()
	return errors.Join(errs...)
}
