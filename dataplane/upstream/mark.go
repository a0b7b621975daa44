package upstream

import (
	"log/slog"
	"sync/atomic"
	"syscall"
)

// Packet marks on upstream sockets. Capture rules (capture/) skip packets
// carrying the proxy mark, so the proxy's own connections to upstreams, to
// passthrough destinations and to the app are never redirected back into
// the proxy. The mark is a process-wide setting owned by the Manager: every
// Cluster reads it through a pointer, so changing it affects new sockets
// only.

// markState is the Manager's mark and whether the failure to set it was
// already logged.
type markState struct {
	mark   atomic.Uint32
	warned atomic.Bool
	log    *slog.Logger
}

// SetMark makes every socket the Manager's clusters dial carry mark
// (SO_MARK) from now on; 0 turns marking off. Setting a mark needs
// CAP_NET_ADMIN: without it the first failure is logged and sockets stay
// unmarked, which is harmless unless capture relies on the mark alone.
func (m *Manager) SetMark(mark uint32) {
	m.marks.mark.Store(mark)
}

// Mark returns the mark set by SetMark (0: none).
func (m *Manager) Mark() uint32 { return m.marks.mark.Load() }

// DialControl is a net.Dialer Control function applying the mark. Dialers
// outside this package that open upstream sockets (ORIGINAL_DST
// passthrough, tunnels) use it so that no proxy socket escapes the mark.
func (m *Manager) DialControl() func(network, address string, rc syscall.RawConn) error {
	return m.marks.control
}

// MarkControl is a net.Dialer Control applying mark like a Manager's, for
// sockets the proxy opens before or outside its Manager (the CA client);
// it logs its first failure once. mark 0 returns nil (no Control).
func MarkControl(mark uint32, log *slog.Logger) func(network, address string, rc syscall.RawConn) error {
	if mark == 0 {
		return nil
	}
	s := &markState{log: log}
	s.mark.Store(mark)
	return s.control
}

// DialControl is the Manager's DialControl for this cluster; nil when the
// cluster was not made by a Manager.
func (c *Cluster) DialControl() func(network, address string, rc syscall.RawConn) error {
	if c.marks == nil {
		return nil
	}
	return c.marks.control
}

// control sets the mark on a socket about to connect. It never fails the
// dial: an unmarked connection still works where the proxy's uid is
// excluded from capture, and failing every dial would take the mesh down.
func (s *markState) control(_, _ string, rc syscall.RawConn) error {
	mark := s.mark.Load()
	if mark == 0 {
		return nil
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = setMark(fd, mark) }); err != nil {
		serr = err
	}
	if serr != nil && s.warned.CompareAndSwap(false, true) {
		log := s.log
		if log == nil {
			log = slog.Default()
		}
		log.Warn("cannot mark upstream sockets; continuing unmarked (needs CAP_NET_ADMIN)",
			"mark", mark, "err", serr)
	}
	return nil
}
