package whitebox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Forward is a local port forward: connections accepted on Listen are
// served as if captured on their way to Target (host:port, a mesh name or
// an address).
type Forward struct {
	Listen string // loopback IP:PORT
	Target string // HOST:PORT
}

func (f Forward) String() string { return f.Listen + "=" + f.Target }

// ParseForward parses "LISTEN=TARGET", e.g.
// "127.0.0.1:9080=reviews.default.svc.cluster.local:9080". A bare port as
// LISTEN means 127.0.0.1:PORT.
func ParseForward(s string) (Forward, error) {
	listen, target, ok := strings.Cut(s, "=")
	if !ok {
		return Forward{}, fmt.Errorf("forward %q: want LISTEN=HOST:PORT", s)
	}
	if _, err := strconv.ParseUint(listen, 10, 16); err == nil {
		listen = "127.0.0.1:" + listen
	}
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		return Forward{}, fmt.Errorf("forward %q: listen address: %w", s, err)
	}
	if !ap.Addr().IsLoopback() {
		return Forward{}, fmt.Errorf("forward %q: listen address must be loopback", s)
	}
	if _, _, err := splitTarget(target, 0); err != nil {
		return Forward{}, fmt.Errorf("forward %q: target: %w", s, err)
	}
	return Forward{Listen: listen, Target: target}, nil
}

// splitTarget splits HOST:PORT; def is used when PORT is missing (0: a
// port is required).
func splitTarget(hp string, def uint16) (string, uint16, error) {
	host, ps, err := net.SplitHostPort(hp)
	if err != nil {
		if def == 0 || strings.Contains(strings.TrimPrefix(hp, "["), ":") && !strings.HasSuffix(hp, "]") {
			return "", 0, fmt.Errorf("%q: want HOST:PORT", hp)
		}
		return strings.Trim(hp, "[]"), def, nil
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || p == 0 {
		return "", 0, fmt.Errorf("%q: bad port", hp)
	}
	if host == "" {
		return "", 0, fmt.Errorf("%q: empty host", hp)
	}
	return host, uint16(p), nil
}

// forwarder is one running forward.
type forwarder struct {
	f          Forward
	host       string
	port       uint16
	ln         *net.TCPListener
	unresolved atomic.Int64 // connections closed because Target did not resolve
}

func (s *Server) startForward(f Forward) (*forwarder, error) {
	host, port, err := splitTarget(f.Target, 0)
	if err != nil {
		return nil, fmt.Errorf("forward %s: %w", f, err)
	}
	ln, err := listenLoopback(f.Listen)
	if err != nil {
		return nil, fmt.Errorf("forward %s: %w", f, err)
	}
	fw := &forwarder{f: f, host: host, port: port, ln: ln}
	s.wg.Add(1)
	go s.acceptForward(fw)
	s.log.Info("whitebox forward listening", "listen", ln.Addr().String(), "target", f.Target)
	return fw, nil
}

func (s *Server) acceptForward(fw *forwarder) {
	defer s.wg.Done()
	var delay time.Duration
	for {
		c, err := fw.ln.AcceptTCP()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("whitebox forward: accept failed; retrying", "listen", fw.f.Listen, "err", err, "delay", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		go s.serveForward(fw, c)
	}
}

// serveForward resolves the target per connection, so a forward follows
// the mesh config (a VIP listener added later, a name that starts to
// resolve) without a restart.
func (s *Server) serveForward(fw *forwarder, c *net.TCPConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	dst, err := s.res.resolve(ctx, fw.host, fw.port)
	cancel()
	if err != nil {
		// Failure path only: a forward that cannot reach its target is a
		// configuration problem the operator must see.
		fw.unresolved.Add(1)
		s.log.Warn("whitebox forward: target unresolved; connection closed", "listen", fw.f.Listen, "err", err)
		_ = c.Close()
		return
	}
	remote := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	if err := s.opts.Dataplane.HandleAs(c, nil, remote, dst); err != nil {
		s.log.Warn("whitebox forward: connection closed", "listen", fw.f.Listen, "target", fw.f.Target, "err", err)
		_ = c.Close()
	}
}
