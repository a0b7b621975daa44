package dns

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// DefaultAddr is Istio's DNS proxy port on loopback, where capture sends
// udp/tcp 53.
const DefaultAddr = "127.0.0.1:15053"

// Limits on resources a client can hold.
const (
	defaultMaxInflight = 1024
	maxTCPConns        = 256
	tcpIdleTimeout     = 10 * time.Second
)

// Config configures a Server. Zero fields take the defaults.
type Config struct {
	// Addrs are the addresses to serve, each over UDP and TCP on the same
	// port ("127.0.0.1:15053", "[::1]:15053"). A port of 0 picks a free one.
	// Bind the address the capture redirects to (REDIRECT sends to the
	// loopback address): the UDP reply must leave from it.
	Addrs []string
	// Table holds the mesh names; nil answers none (forward everything).
	Table *Table
	// Clients places a query's source address as a workload (node mode:
	// StoreClients), so that a hostname several namespaces define is
	// answered with the client's namespace's service and only VIPs on
	// the client's network; nil treats every client as unknown.
	Clients ClientFunc
	// Upstreams are host:port DNS servers, tried in order.
	Upstreams []string
	// UpstreamTimeout bounds one attempt at one upstream.
	UpstreamTimeout time.Duration
	// Mark is SO_MARK on upstream sockets (DefaultMark for the capture's
	// exclusion); 0 sets none.
	Mark int
	// Dial, when set, opens upstream sockets instead of a net.Dialer with
	// Mark, e.g. one that creates them in another network namespace: the
	// server's goroutines run on arbitrary threads, so the namespace Listen
	// was called in only holds for the listening sockets.
	Dial DialFunc
	// CacheSize bounds the cache of forwarded answers (entries);
	// 0 means DefaultCacheSize, negative disables the cache.
	CacheSize int
	// MaxInflight bounds concurrent UDP queries; more are dropped (the
	// client retries).
	MaxInflight int
	Metrics     *Metrics
	Log         *slog.Logger
}

// Server is a running DNS proxy.
type Server struct {
	cfg     Config
	table   *Table
	fwd     *forwarder
	cache   *cache
	metrics *Metrics
	log     *slog.Logger
	sem     chan struct{}

	udp   []*net.UDPConn
	tcp   []*net.TCPListener
	addrs []netip.AddrPort

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex // guards conns
	conns map[net.Conn]struct{}
}

// Listen binds every address in cfg, in the network namespace of the
// calling thread, and starts serving.
func Listen(cfg Config) (*Server, error) {
	if len(cfg.Addrs) == 0 {
		cfg.Addrs = []string{DefaultAddr}
	}
	if cfg.MaxInflight <= 0 {
		cfg.MaxInflight = defaultMaxInflight
	}
	if cfg.CacheSize == 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	s := &Server{
		cfg: cfg, table: cfg.Table, metrics: cfg.Metrics, log: cfg.Log,
		fwd:   newForwarder(cfg.Upstreams, cfg.UpstreamTimeout, cfg.Mark),
		cache: newCache(cfg.CacheSize, nil),
		sem:   make(chan struct{}, cfg.MaxInflight),
		conns: map[net.Conn]struct{}{},
	}
	if s.table == nil {
		s.table = NewTable(TableConfig{})
	}
	if cfg.Dial != nil {
		s.fwd.dial = cfg.Dial
	}
	if s.metrics == nil {
		s.metrics = &Metrics{}
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for _, a := range cfg.Addrs {
		uc, tl, err := listenPair(a)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("dns proxy %s: %w", a, err)
		}
		s.udp, s.tcp = append(s.udp, uc), append(s.tcp, tl)
		s.addrs = append(s.addrs, uc.LocalAddr().(*net.UDPAddr).AddrPort())
	}
	for i := range s.udp {
		s.wg.Add(2)
		go s.serveUDP(s.udp[i])
		go s.serveTCP(s.tcp[i])
	}
	return s, nil
}

// listenPair binds UDP and TCP on the same address and port; with port 0
// it retries until a port free for both is found.
func listenPair(addr string) (*net.UDPConn, *net.TCPListener, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return nil, nil, err
	}
	for attempt := 0; ; attempt++ {
		uc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			return nil, nil, err
		}
		bound := uc.LocalAddr().(*net.UDPAddr).AddrPort()
		tl, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(bound))
		if err == nil {
			return uc, tl, nil
		}
		uc.Close()
		if ap.Port() != 0 || attempt == 10 {
			return nil, nil, err
		}
	}
}

// Addrs are the bound addresses (UDP and TCP share each).
func (s *Server) Addrs() []netip.AddrPort { return s.addrs }

// Metrics returns the server's counters.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Close stops serving, aborts forwarded queries and waits for every
// goroutine to finish.
func (s *Server) Close() error {
	s.cancel()
	for _, c := range s.udp {
		c.Close()
	}
	for _, l := range s.tcp {
		l.Close()
	}
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

func (s *Server) serveUDP(pc *net.UDPConn) {
	defer s.wg.Done()
	buf := make([]byte, maxMsgSize)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // ICMP errors surface here on some systems
		}
		select {
		case s.sem <- struct{}{}:
		default:
			continue // overloaded: drop, the client's resolver retries
		}
		b := append([]byte(nil), buf[:n]...)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() { <-s.sem }()
			if reply := s.handle(s.ctx, b, from.Addr(), false); reply != nil {
				_, _ = pc.WriteToUDPAddrPort(reply, from)
			}
		}()
	}
}

func (s *Server) serveTCP(l *net.TCPListener) {
	defer s.wg.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // e.g. EMFILE: do not spin
			continue
		}
		s.mu.Lock()
		if len(s.conns) >= maxTCPConns || s.ctx.Err() != nil {
			s.mu.Unlock()
			c.Close()
			continue
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go s.serveConn(c)
	}
}

// serveConn answers the queries on one TCP connection in order until the
// client closes it or it idles (RFC 7766 allows several per connection).
func (s *Server) serveConn(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()
	var src netip.Addr
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		src = ta.AddrPort().Addr()
	}
	for {
		_ = c.SetReadDeadline(time.Now().Add(tcpIdleTimeout))
		b, err := readTCPMsg(c)
		if err != nil {
			return
		}
		reply := s.handle(s.ctx, b, src, true)
		if reply == nil {
			return
		}
		out := make([]byte, 2+len(reply))
		binary.BigEndian.PutUint16(out, uint16(len(reply)))
		copy(out[2:], reply)
		_ = c.SetWriteDeadline(time.Now().Add(tcpIdleTimeout))
		if _, err := c.Write(out); err != nil {
			return
		}
	}
}
