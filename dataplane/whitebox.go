package dataplane

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
)

// ErrNoListener means no listener of the current snapshot would serve a
// destination: none is addressed to it (exactly or by wildcard on its
// port) and there is no capture listener (use_original_dst) whose own
// chains would take it.
var ErrNoListener = errors.New("no listener for destination")

// ErrClosed is returned by HandleAs once Shutdown has begun.
var ErrClosed = errors.New("dataplane shut down")

// HandleAs serves c exactly like a connection captured with original
// destination dst: the listener the use_original_dst dispatch would pick
// serves it (an exact or wildcard address match, else the capture
// listener's own chains). It is the entry point of modes that learn the
// destination some other way than SO_ORIGINAL_DST, such as whitebox's
// CONNECT tunnels and port forwards. pre holds bytes already read from c
// (buffered after a CONNECT head); the listener filters and the chain see
// them first. remote is the downstream address to report and match on.
//
// HandleAs blocks until the connection ends and closes c, except when it
// returns an error (ErrNoListener, ErrClosed): then c is left to the
// caller. Shutdown waits for running HandleAs calls like for accepted
// connections, which are drained with the listener serving them.
func (s *Server) HandleAs(c *net.TCPConn, pre []byte, remote, dst netip.AddrPort) error {
	dst = canonAddrPort(dst)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	l := s.listenerFor(dst)
	if l == nil {
		s.mu.Unlock()
		return fmt.Errorf("%w %s", ErrNoListener, dst)
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	_ = c.SetNoDelay(true)
	local := canonAddrPort(c.LocalAddr().(*net.TCPAddr).AddrPort())
	l.serveAfter(c, pre, local, canonAddrPort(remote), dst)
	return nil
}

// Serves reports whether HandleAs would find a listener for dst now, so a
// caller can answer its client (CONNECT's 200 or an error) before handing
// the connection over.
func (s *Server) Serves(dst netip.AddrPort) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.closed && s.listenerFor(canonAddrPort(dst)) != nil
}

// listenerFor is the use_original_dst dispatch without an accepting
// listener: the address index, else the first (by name) capture listener,
// whose own chains serve unmatched destinations (Istio's passthrough).
// Callers hold s.mu.
func (s *Server) listenerFor(dst netip.AddrPort) *listener {
	if l := s.lookupListener(dst, nil); l != nil {
		return l
	}
	names := make([]string, 0, len(s.live))
	for name, l := range s.live {
		if l.spec().UseOriginalDst {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	slices.Sort(names)
	return s.live[names[0]]
}
