package dns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	if cfg.Addrs == nil {
		cfg.Addrs = []string{"127.0.0.1:0"}
	}
	s, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func meshTable() *Table {
	tab := NewTable(TableConfig{Namespace: "default", Search: []string{"default.svc.cluster.local", "svc.cluster.local", "cluster.local"}})
	many := make([]string, 100)
	for i := range many {
		many[i] = fmt.Sprintf("10.9.0.%d", i)
	}
	tab.SetXDS([]Host{
		{Name: "reviews.default.svc.cluster.local", Addrs: addrs("10.0.0.1")},
		{Name: "dual.default.svc.cluster.local", Addrs: addrs("10.0.0.2", "fd00::2")},
		{Name: "headless.default.svc.cluster.local", Addrs: addrs(many...)},
	})
	return tab
}

func answerAddrs(m dnsmessage.Message) []string {
	var out []string
	for _, r := range m.Answers {
		switch b := r.Body.(type) {
		case *dnsmessage.AResource:
			out = append(out, netip.AddrFrom4(b.A).String())
		case *dnsmessage.AAAAResource:
			out = append(out, netip.AddrFrom16(b.AAAA).String())
		}
	}
	return out
}

// TestServerTable: mesh names are answered from the table over UDP and
// TCP, authoritatively with TTL 30, never asking upstream; AAAA for a v4
// name is NODATA; search expansions are NXDOMAIN.
func TestServerTable(t *testing.T) {
	up := startUpstream(t, false)
	s := startServer(t, Config{Table: meshTable(), Upstreams: []string{up.addr}})
	addr := s.Addrs()[0]
	tests := []struct {
		name  string
		typ   dnsmessage.Type
		rcode dnsmessage.RCode
		want  []string
	}{
		{"reviews.default.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"10.0.0.1"}},
		{"REVIEWS.default.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"10.0.0.1"}},
		{"reviews.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"10.0.0.1"}},
		{"reviews.default.svc.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, []string{"10.0.0.1"}},
		{"reviews.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, nil}, // NODATA, not NXDOMAIN
		{"reviews.", dnsmessage.TypeTXT, dnsmessage.RCodeSuccess, nil},
		{"dual.default.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, []string{"fd00::2"}},
		{"reviews.default.svc.cluster.local.default.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeNameError, nil},
		{"reviews.default.svc.cluster.local.cluster.local.", dnsmessage.TypeAAAA, dnsmessage.RCodeNameError, nil},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range tests {
			m := ask(t, network, addr, tc.name, tc.typ, 0)
			got := answerAddrs(m)
			if m.Header.RCode != tc.rcode || fmt.Sprint(got) != fmt.Sprint(tc.want) || !m.Header.Authoritative {
				t.Errorf("%s %s %v: rcode %v aa %v answers %v; want %v %v", network, tc.name, tc.typ, m.Header.RCode, m.Header.Authoritative, got, tc.rcode, tc.want)
			}
			for _, r := range m.Answers {
				if r.Header.TTL != TTL || r.Header.Name.String() != tc.name {
					t.Errorf("%s %s: record %v", network, tc.name, r.Header)
				}
			}
		}
	}
	if n := up.queries.Load(); n != 0 {
		t.Errorf("upstream asked %d times for mesh names", n)
	}
	if got := s.Metrics().Requests("a", "udp"); got != 5 {
		t.Errorf("istio_dns_requests_total{a,udp} = %d, want 5", got)
	}
	if got := s.Metrics().Upstream("a", "udp"); got != 0 {
		t.Errorf("istio_dns_upstream_requests_total{a,udp} = %d, want 0", got)
	}
}

// TestServerForward: other names go to the upstream, over the client's
// transport; answers are cached for their TTL; NXDOMAIN and SERVFAIL pass
// through.
func TestServerForward(t *testing.T) {
	up := startUpstream(t, false)
	s := startServer(t, Config{Table: meshTable(), Upstreams: []string{up.addr}})
	addr := s.Addrs()[0]
	m := ask(t, "udp", addr, "ext.example.", dnsmessage.TypeA, 0)
	if got := answerAddrs(m); fmt.Sprint(got) != "[192.0.2.1]" || m.Header.Authoritative {
		t.Fatalf("ext.example: %v aa=%v", got, m.Header.Authoritative)
	}
	m = ask(t, "udp", addr, "EXT.example.", dnsmessage.TypeA, 0) // cached, asker's case kept
	if got := answerAddrs(m); fmt.Sprint(got) != "[192.0.2.1]" || m.Questions[0].Name.String() != "EXT.example." {
		t.Fatalf("cached ext.example: %v %v", got, m.Questions)
	}
	if ttl := m.Answers[0].Header.TTL; ttl > 60 || ttl < 58 {
		t.Errorf("cached TTL %d", ttl)
	}
	if n := up.queries.Load(); n != 1 {
		t.Errorf("upstream asked %d times, want 1 (second from cache)", n)
	}
	if m := ask(t, "tcp", addr, "nx.example.", dnsmessage.TypeA, 0); m.Header.RCode != dnsmessage.RCodeNameError {
		t.Errorf("nx.example over tcp: %v", m.Header.RCode)
	}
	if up.tcpQs.Load() != 1 {
		t.Errorf("TCP query not forwarded over TCP")
	}
	if m := ask(t, "udp", addr, "fail.example.", dnsmessage.TypeA, 0); m.Header.RCode != dnsmessage.RCodeServerFailure {
		t.Errorf("fail.example: %v", m.Header.RCode)
	}
	if got := s.Metrics().Upstream("a", "udp"); got != 2 {
		t.Errorf("istio_dns_upstream_requests_total{a,udp} = %d, want 2", got)
	}
}

// TestServerFailover: a dead or silent upstream is skipped for the next;
// when all fail the client gets SERVFAIL within the timeouts.
func TestServerFailover(t *testing.T) {
	good := startUpstream(t, false)
	silent := startUpstream(t, true)
	dead := deadAddr(t)
	tests := []struct {
		name      string
		upstreams []string
		rcode     dnsmessage.RCode
		answers   int
	}{
		{"dead then good", []string{dead, good.addr}, dnsmessage.RCodeSuccess, 1},
		{"silent then good", []string{silent.addr, good.addr}, dnsmessage.RCodeSuccess, 1},
		{"all fail", []string{dead, silent.addr}, dnsmessage.RCodeServerFailure, 0},
		{"none configured", nil, dnsmessage.RCodeServerFailure, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startServer(t, Config{Upstreams: tc.upstreams, UpstreamTimeout: 300 * time.Millisecond, CacheSize: -1})
			for _, network := range []string{"udp", "tcp"} {
				start := time.Now()
				m := ask(t, network, s.Addrs()[0], "ext.example.", dnsmessage.TypeA, 0)
				if m.Header.RCode != tc.rcode || len(m.Answers) != tc.answers {
					t.Errorf("%s: rcode %v, %d answers; want %v, %d", network, m.Header.RCode, len(m.Answers), tc.rcode, tc.answers)
				}
				if d := time.Since(start); d > 2*time.Second {
					t.Errorf("%s: took %v", network, d)
				}
			}
		})
	}
}

// TestServerTruncation: a UDP answer larger than 512 bytes (or the EDNS
// size offered) comes back with TC and no records; the same query over
// TCP gets everything. Holds for table answers and forwarded ones.
func TestServerTruncation(t *testing.T) {
	up := startUpstream(t, false)
	s := startServer(t, Config{Table: meshTable(), Upstreams: []string{up.addr}})
	addr := s.Addrs()[0]
	for _, name := range []string{"headless.default.svc.cluster.local.", "big.example."} {
		m := ask(t, "udp", addr, name, dnsmessage.TypeA, 0)
		if !m.Header.Truncated || len(m.Answers) != 0 {
			t.Errorf("%s over udp: tc=%v with %d answers", name, m.Header.Truncated, len(m.Answers))
		}
		m = ask(t, "tcp", addr, name, dnsmessage.TypeA, 0)
		if m.Header.Truncated || len(m.Answers) != 100 {
			t.Errorf("%s over tcp: tc=%v with %d answers", name, m.Header.Truncated, len(m.Answers))
		}
		m = ask(t, "udp", addr, name, dnsmessage.TypeA, 4096)
		if m.Header.Truncated || len(m.Answers) != 100 {
			t.Errorf("%s over udp with EDNS 4096: tc=%v with %d answers", name, m.Header.Truncated, len(m.Answers))
		}
		// The EDNS size cached answer served to a small client shrinks too.
		m = ask(t, "udp", addr, name, dnsmessage.TypeA, 0)
		if !m.Header.Truncated {
			t.Errorf("%s over udp after a big answer was cached: not truncated", name)
		}
	}
}

// TestServerMalformed: garbage never crashes the server; a parsable header
// gets FORMERR (or NOTIMP for other opcodes), anything less no reply.
func TestServerMalformed(t *testing.T) {
	s := startServer(t, Config{Table: meshTable()})
	addr := s.Addrs()[0]
	hdr := func(flags0, flags1 byte, qd, an, ns, ar uint16) []byte {
		return []byte{0xab, 0xcd, flags0, flags1, byte(qd >> 8), byte(qd), byte(an >> 8), byte(an), byte(ns >> 8), byte(ns), byte(ar >> 8), byte(ar)}
	}
	question := []byte{7, 'r', 'e', 'v', 'i', 'e', 'w', 's', 0, 0, 1, 0, 1}
	tests := []struct {
		name  string
		in    []byte
		rcode int // -1: no reply
	}{
		{"too short", []byte{1, 2, 3}, -1},
		{"a response", append(hdr(0x80, 0, 1, 0, 0, 0), question...), -1},
		{"no question", hdr(1, 0, 0, 0, 0, 0), int(dnsmessage.RCodeFormatError)},
		{"two questions", append(append(hdr(1, 0, 2, 0, 0, 0), question...), question...), int(dnsmessage.RCodeFormatError)},
		{"truncated question", append(hdr(1, 0, 1, 0, 0, 0), question[:5]...), int(dnsmessage.RCodeFormatError)},
		{"bad label", append(hdr(1, 0, 1, 0, 0, 0), 0xc0, 0xff, 0, 1, 0, 1), int(dnsmessage.RCodeFormatError)},
		{"missing additional", append(hdr(1, 0, 1, 0, 0, 1), question...), int(dnsmessage.RCodeFormatError)},
		{"opcode status", append(hdr(2<<3, 0, 1, 0, 0, 0), question...), int(dnsmessage.RCodeNotImplemented)},
		{"good", append(hdr(1, 0, 1, 0, 0, 0), question...), int(dnsmessage.RCodeSuccess)},
	}
	for _, tc := range tests {
		for _, network := range []string{"udp", "tcp"} {
			timeout := 3 * time.Second
			if tc.rcode < 0 {
				timeout = 300 * time.Millisecond
			}
			r, err := rawAsk(network, addr, tc.in, timeout)
			if tc.rcode < 0 {
				if err == nil {
					t.Errorf("%s/%s: got a reply % x", tc.name, network, r)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s/%s: %v", tc.name, network, err)
				continue
			}
			var p dnsmessage.Parser
			h, err := p.Start(r)
			if err != nil || h.ID != 0xabcd || !h.Response || int(h.RCode) != tc.rcode {
				t.Errorf("%s/%s: reply %+v (%v), want rcode %d", tc.name, network, h, err, tc.rcode)
			}
		}
	}
}

func TestListenErrors(t *testing.T) {
	s := startServer(t, Config{})
	if _, err := Listen(Config{Addrs: []string{s.Addrs()[0].String()}}); err == nil {
		t.Error("second server on a busy port: no error")
	}
	if _, err := Listen(Config{Addrs: []string{"localhost:53"}}); err == nil {
		t.Error("host name address: no error")
	}
}

// TestServerDialHook: Config.Dial opens the upstream sockets (for another
// network namespace, say); here it sends every upstream to the test one.
func TestServerDialHook(t *testing.T) {
	good := startUpstream(t, false)
	var used []string
	var mu sync.Mutex
	s := startServer(t, Config{Upstreams: []string{"192.0.2.99:53"}, CacheSize: -1,
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			used = append(used, network+" "+addr)
			mu.Unlock()
			var d net.Dialer
			return d.DialContext(ctx, network, good.addr)
		}})
	for _, network := range []string{"udp", "tcp"} {
		if m := ask(t, network, s.Addrs()[0], "ext.example.", dnsmessage.TypeA, 0); len(m.Answers) != 1 {
			t.Errorf("%s: %d answers", network, len(m.Answers))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(used) != "[udp 192.0.2.99:53 tcp 192.0.2.99:53]" {
		t.Errorf("dial calls %v", used)
	}
}
