package dataplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"

	"golang.org/x/sys/unix"

	"github.com/meshlet/meshlet/capture"
	"github.com/meshlet/meshlet/state"
)

// Listening sockets move between processes for an upgrade without refused
// connections: the running process sends duplicates of its listeners' file
// descriptors over a Unix socket (SCM_RIGHTS), the new process serves on
// them, and only then does the old one stop accepting. Both processes hold
// the same kernel socket meanwhile, so its accept queue is never without a
// reader and no SYN meets a closed port.

// maxHandoffFDs stays under the kernel's SCM_MAX_FD (253) so that every
// socket fits in one message.
const maxHandoffFDs = 250

// HandoffKey names a listening socket in a handoff: the listener's name and
// its configured address. A listener whose address changed in between is
// bound afresh rather than given a socket on the wrong address.
func HandoffKey(name string, addr netip.AddrPort) string {
	return name + "@" + canonAddrPort(addr).String()
}

// handoffHeader travels with the descriptors; Keys[i] names the i-th one.
type handoffHeader struct {
	Keys []string `json:"keys"`
}

// listenTCP binds spec's socket, or takes the one inherited from a previous
// process for this listener when there is one.
func (s *Server) listenTCP(spec *state.Listener, network string, addr *net.TCPAddr) (*net.TCPListener, error) {
	if ln := s.takeInherited(spec); ln != nil {
		s.log.Info("listener inherited", "listener", spec.Name, "address", ln.Addr().String())
		return ln, nil
	}
	if spec.Transparent || (s.opts.Transparent != nil && s.opts.Transparent(spec)) {
		ln, err := capture.ListenTransparent(context.Background(), network, addr.String())
		if err != nil {
			return nil, fmt.Errorf("transparent: %w", err)
		}
		return ln.(*net.TCPListener), nil
	}
	return net.ListenTCP(network, addr)
}

// takeInherited removes and returns the inherited socket for spec, if any.
func (s *Server) takeInherited(spec *state.Listener) *net.TCPListener {
	s.inheritMu.Lock()
	defer s.inheritMu.Unlock()
	key := HandoffKey(spec.Name, spec.Address)
	ln := s.opts.Inherited[key]
	if ln != nil {
		delete(s.opts.Inherited, key)
	}
	return ln
}

// CloseUnusedInherited closes inherited sockets that no listener took (the
// configuration no longer has them) and returns their keys. Call it once
// the configuration has settled, for example when the proxy is ready.
func (s *Server) CloseUnusedInherited() []string {
	s.inheritMu.Lock()
	defer s.inheritMu.Unlock()
	var keys []string
	for k, ln := range s.opts.Inherited {
		_ = ln.Close()
		keys = append(keys, k)
	}
	clear(s.opts.Inherited)
	slices.Sort(keys)
	return keys
}

// ListenerFiles returns a duplicate of every live listener's socket, keyed by
// HandoffKey. The caller owns and must close the files; the listeners keep
// accepting.
func (s *Server) ListenerFiles() (map[string]*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]*os.File, len(s.live))
	for name, l := range s.live {
		if l.ln == nil {
			continue
		}
		f, err := l.ln.File()
		if err != nil {
			closeFiles(out)
			return nil, fmt.Errorf("listener %q: dup socket: %w", name, err)
		}
		out[HandoffKey(name, l.spec().Address)] = f
	}
	return out, nil
}

func closeFiles(m map[string]*os.File) {
	for _, f := range m {
		_ = f.Close()
	}
}

// SendListeners writes files to c in one message: a JSON header naming them
// and their descriptors as SCM_RIGHTS.
func SendListeners(c *net.UnixConn, files map[string]*os.File) error {
	if len(files) > maxHandoffFDs {
		return fmt.Errorf("handoff: %d sockets exceed the limit of %d", len(files), maxHandoffFDs)
	}
	var h handoffHeader
	for k := range files {
		h.Keys = append(h.Keys, k)
	}
	slices.Sort(h.Keys)
	// The descriptors are read through SyscallConn, not Fd: Fd puts the
	// descriptor in blocking mode, and O_NONBLOCK belongs to the open file
	// description the duplicate shares with our own listener, whose accept
	// loop would then block in the kernel and never see Close.
	fds := make([]int, len(h.Keys))
	for i, k := range h.Keys {
		rc, err := files[k].SyscallConn()
		if err != nil {
			return fmt.Errorf("handoff: %s: %w", k, err)
		}
		if err := rc.Control(func(fd uintptr) { fds[i] = int(fd) }); err != nil {
			return fmt.Errorf("handoff: %s: %w", k, err)
		}
	}
	body, err := json.Marshal(h)
	if err != nil {
		return err
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	n, oobn, err := c.WriteMsgUnix(body, oob, nil)
	if err != nil {
		return fmt.Errorf("handoff: send: %w", err)
	}
	if n != len(body) || oobn != len(oob) {
		return fmt.Errorf("handoff: short send (%d/%d bytes, %d/%d control)", n, len(body), oobn, len(oob))
	}
	return nil
}

// ReceiveListeners reads one SendListeners message from c and returns the
// listeners by key. Descriptors that are not TCP listening sockets are an
// error; every descriptor received is closed or returned.
func ReceiveListeners(c *net.UnixConn) (map[string]*net.TCPListener, error) {
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(maxHandoffFDs*4))
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, fmt.Errorf("handoff: receive: %w", err)
	}
	fds, perr := parseRights(oob[:oobn])
	files := make([]*os.File, len(fds))
	for i, fd := range fds {
		files[i] = os.NewFile(uintptr(fd), fmt.Sprintf("handoff-%d", i))
	}
	defer func() {
		for _, f := range files {
			_ = f.Close() // net.FileListener dups; the originals go
		}
	}()
	if perr != nil {
		return nil, perr
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		return nil, errors.New("handoff: message truncated")
	}
	var h handoffHeader
	if err := json.Unmarshal(buf[:n], &h); err != nil {
		return nil, fmt.Errorf("handoff: header: %w", err)
	}
	if len(h.Keys) != len(files) {
		return nil, fmt.Errorf("handoff: header names %d sockets, got %d descriptors", len(h.Keys), len(files))
	}
	out := make(map[string]*net.TCPListener, len(files))
	for i, f := range files {
		ln, err := net.FileListener(f)
		if err != nil {
			closeListeners(out)
			return nil, fmt.Errorf("handoff: socket %q: %w", h.Keys[i], err)
		}
		tl, ok := ln.(*net.TCPListener)
		if !ok {
			_ = ln.Close()
			closeListeners(out)
			return nil, fmt.Errorf("handoff: socket %q is a %T, not a TCP listener", h.Keys[i], ln)
		}
		out[h.Keys[i]] = tl
	}
	return out, nil
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("handoff: control message: %w", err)
	}
	var fds []int
	var errs []error
	for i := range msgs {
		got, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			errs = append(errs, err)
			continue
		}
		fds = append(fds, got...)
	}
	if len(errs) > 0 {
		return fds, fmt.Errorf("handoff: control message: %w", errors.Join(errs...))
	}
	return fds, nil
}

func closeListeners(m map[string]*net.TCPListener) {
	for _, ln := range m {
		_ = ln.Close()
	}
}
