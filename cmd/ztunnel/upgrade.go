package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/meshlet/meshlet/dataplane"
)

// Upgrade without dropping connections. The running process listens on a
// Unix socket (--upgrade-socket). A new process started with
// --upgrade-from on that path asks for the listening sockets, receives
// duplicates of them (dataplane.SendListeners, SCM_RIGHTS), starts serving
// on them and, once ready, says so; the old process then stops accepting,
// drains its open connections and exits. Both serve the same kernel sockets
// in between, so no connection is refused.
//
// The exchange, one line or message each way:
//
//	new -> old  "listeners\n"
//	old -> new  the sockets (JSON header + SCM_RIGHTS)
//	new -> old  "ready\n"    (or the connection ends: the old one keeps serving)
//	old -> new  "ok\n"       (the old one has removed its socket path)
const (
	upgradeAsk   = "listeners"
	upgradeReady = "ready"
	upgradeOK    = "ok"
	// upgradeReadyTimeout bounds how long the new process may take to be
	// ready (xDS synced, listeners bound) on the inherited sockets.
	upgradeReadyTimeout = 30 * time.Second
	upgradeIOTimeout    = 5 * time.Second
)

type upgradeOptions struct {
	socket string // serve handoffs here
	from   string // take listeners from the process serving this path
}

func (o *upgradeOptions) register(fs *flag.FlagSet) {
	fs.StringVar(&o.socket, "upgrade-socket", "", "Unix socket on which this process hands its listening sockets to a successor started with --upgrade-from (\"\" disables)")
	fs.StringVar(&o.from, "upgrade-from", "", "Unix socket of a running ztunnel to take the listening sockets from; it drains and exits once this process is ready")
}

// upgradeClient is the new process's side of a handoff in progress.
type upgradeClient struct {
	conn *net.UnixConn
	log  *slog.Logger
}

// receive asks the process at o.from for its listeners. It returns nil, nil
// without --upgrade-from.
func (o *upgradeOptions) receive(log *slog.Logger) (map[string]*net.TCPListener, *upgradeClient, error) {
	if o.from == "" {
		return nil, nil, nil
	}
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: o.from, Net: "unix"})
	if err != nil {
		return nil, nil, fmt.Errorf("upgrade from %s: %w", o.from, err)
	}
	_ = c.SetDeadline(time.Now().Add(upgradeIOTimeout))
	if _, err := c.Write([]byte(upgradeAsk + "\n")); err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("upgrade from %s: %w", o.from, err)
	}
	lns, err := dataplane.ReceiveListeners(c)
	if err != nil {
		c.Close()
		return nil, nil, fmt.Errorf("upgrade from %s: %w", o.from, err)
	}
	keys := make([]string, 0, len(lns))
	for k := range lns {
		keys = append(keys, k)
	}
	log.Info("upgrade: received listening sockets", "from", o.from, "sockets", keys)
	return lns, &upgradeClient{conn: c, log: log}, nil
}

// complete waits until p serves (on the inherited sockets), then tells the
// old process to drain. On error the old process keeps serving.
func (u *upgradeClient) complete(p *proxy) error {
	defer u.conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), upgradeReadyTimeout)
	err := p.waitReady(ctx)
	cancel()
	if err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	if unused := p.dp.CloseUnusedInherited(); len(unused) > 0 {
		u.log.Info("upgrade: closed inherited sockets no listener uses", "sockets", unused)
	}
	_ = u.conn.SetDeadline(time.Now().Add(upgradeIOTimeout))
	if _, err := u.conn.Write([]byte(upgradeReady + "\n")); err != nil {
		return fmt.Errorf("upgrade: telling the old process: %w", err)
	}
	line, err := bufio.NewReader(u.conn).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != upgradeOK {
		return fmt.Errorf("upgrade: old process did not confirm: %q %v", line, err)
	}
	u.log.Info("upgrade: old process draining")
	return nil
}

// upgradeServer is the running process's side: it hands its sockets to
// one successor at a time and closes upgraded once one took over.
type upgradeServer struct {
	ln       *net.UnixListener
	p        *proxy
	log      *slog.Logger
	upgraded chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

// serve starts the handoff socket at o.socket (nil without the flag). A
// stale socket file from an earlier process is replaced.
func (o *upgradeOptions) serve(p *proxy, log *slog.Logger) (*upgradeServer, error) {
	if o.socket == "" {
		return nil, nil
	}
	if fi, err := os.Lstat(o.socket); err == nil && fi.Mode()&os.ModeSocket != 0 {
		_ = os.Remove(o.socket)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: o.socket, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("upgrade socket: %w", err)
	}
	_ = os.Chmod(o.socket, 0o600) // whoever can connect gets our sockets
	s := &upgradeServer{ln: ln, p: p, log: log, upgraded: make(chan struct{})}
	s.wg.Add(1)
	go s.acceptLoop()
	log.Info("upgrade socket listening", "path", o.socket)
	return s, nil
}

// done is closed once a successor took over; nil-safe.
func (s *upgradeServer) done() <-chan struct{} {
	if s == nil {
		return nil
	}
	return s.upgraded
}

// close stops serving handoffs and removes the socket path.
func (s *upgradeServer) close() {
	if s == nil {
		return
	}
	_ = s.ln.Close()
	s.wg.Wait()
}

func (s *upgradeServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.AcceptUnix()
		if err != nil {
			return // closed
		}
		if err := s.handoff(c); err != nil {
			s.log.Warn("upgrade: handoff failed; still serving", "err", err)
		}
		c.Close()
		select {
		case <-s.upgraded:
			return
		default:
		}
	}
}

// handoff runs one exchange with a successor.
func (s *upgradeServer) handoff(c *net.UnixConn) error {
	_ = c.SetDeadline(time.Now().Add(upgradeIOTimeout))
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != upgradeAsk {
		return fmt.Errorf("bad request %q: %v", line, err)
	}
	files, err := s.p.dp.ListenerFiles()
	if err != nil {
		return err
	}
	if err := s.p.addPortFiles(files); err != nil {
		for _, f := range files {
			_ = f.Close()
		}
		return err
	}
	err = dataplane.SendListeners(c, files)
	for _, f := range files {
		_ = f.Close()
	}
	if err != nil {
		return err
	}
	s.log.Info("upgrade: sockets sent; waiting for the new process", "sockets", len(files))
	_ = c.SetDeadline(time.Now().Add(upgradeReadyTimeout + upgradeIOTimeout))
	line, err = br.ReadString('\n')
	if err != nil || strings.TrimSpace(line) != upgradeReady {
		return fmt.Errorf("new process did not become ready: %q %v", line, err)
	}
	// Free the path before confirming: the new process binds it next.
	_ = s.ln.Close()
	_ = c.SetDeadline(time.Now().Add(upgradeIOTimeout))
	if _, err := c.Write([]byte(upgradeOK + "\n")); err != nil {
		s.log.Warn("upgrade: confirming", "err", err)
	}
	s.once.Do(func() { close(s.upgraded) })
	return nil
}

var errUpgradeAborted = errors.New("upgrade aborted")

// finishUpgrade completes a handoff started by receive and then serves
// handoffs on o.socket. On failure it returns an error wrapping
// errUpgradeAborted: the old process keeps serving and this one should exit.
func (o *upgradeOptions) finishUpgrade(u *upgradeClient, p *proxy, log *slog.Logger) (*upgradeServer, error) {
	if u != nil {
		if err := u.complete(p); err != nil {
			return nil, fmt.Errorf("%w: %w", errUpgradeAborted, err)
		}
	}
	return o.serve(p, log)
}
