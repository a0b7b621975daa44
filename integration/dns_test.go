package integration

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// dnsBootstrap has a sidecar-style per-service listener bound to the
// reviews VIP, from which the DNS proxy derives the mesh name.
const dnsBootstrap = `static_resources:
  clusters:
  - name: outbound|9080||reviews.default.svc.cluster.local
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: reviews
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 9}}}}]}]
  listeners:
  - name: 10.99.0.7_9080
    address: {socket_address: {address: 10.99.0.7, port_value: 9080}}
    bind_to_port: false
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: reviews, cluster: "outbound|9080||reviews.default.svc.cluster.local"}
`

// dnsUpstream is a test DNS server (UDP and TCP on one port) that knows
// ext.example (one A record) and big.example (100 A records, more than a
// UDP answer can hold without EDNS).
type dnsUpstream struct {
	addr    string
	udp     net.PacketConn
	tcp     net.Listener
	queries atomic.Int64
	wg      sync.WaitGroup
}

// startDNSUpstream serves on addr (port 0: any port free for UDP and TCP);
// do runs the listen calls (inside a network namespace, for example).
func startDNSUpstream(t *testing.T, addr string, do func(func() error) error) *dnsUpstream {
	t.Helper()
	var u dnsUpstream
	err := do(func() error {
		for range 10 {
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				return err
			}
			ln, err := net.Listen("tcp", pc.LocalAddr().String())
			if err != nil {
				pc.Close()
				continue
			}
			u.udp, u.tcp, u.addr = pc, ln, pc.LocalAddr().String()
			return nil
		}
		return fmt.Errorf("no port free for both UDP and TCP on %s", addr)
	})
	if err != nil {
		t.Fatal(err)
	}
	u.wg.Add(2)
	go func() {
		defer u.wg.Done()
		buf := make([]byte, 65535)
		for {
			n, from, err := u.udp.ReadFrom(buf)
			if err != nil {
				return
			}
			u.queries.Add(1)
			if r := dnsUpstreamAnswer(buf[:n], 512); r != nil {
				_, _ = u.udp.WriteTo(r, from)
			}
		}
	}()
	go func() {
		defer u.wg.Done()
		for {
			c, err := u.tcp.Accept()
			if err != nil {
				return
			}
			u.queries.Add(1)
			func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				var l [2]byte
				if _, err := io.ReadFull(c, l[:]); err != nil {
					return
				}
				b := make([]byte, binary.BigEndian.Uint16(l[:]))
				if _, err := io.ReadFull(c, b); err != nil {
					return
				}
				if r := dnsUpstreamAnswer(b, 65535); r != nil {
					_, _ = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(r))), r...))
				}
			}()
		}
	}()
	t.Cleanup(func() { u.udp.Close(); u.tcp.Close(); u.wg.Wait() })
	return &u
}

func dnsUpstreamAnswer(b []byte, max int) []byte {
	var req dnsmessage.Message
	if err := req.Unpack(b); err != nil || len(req.Questions) != 1 {
		return nil
	}
	q := req.Questions[0]
	resp := dnsmessage.Message{Header: dnsmessage.Header{ID: req.Header.ID, Response: true, RecursionAvailable: true}, Questions: req.Questions}
	add := func(ip [4]byte) {
		resp.Answers = append(resp.Answers, dnsmessage.Resource{
			Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
			Body:   &dnsmessage.AResource{A: ip},
		})
	}
	switch strings.ToLower(q.Name.String()) {
	case "ext.example.":
		if q.Type == dnsmessage.TypeA {
			add([4]byte{192, 0, 2, 1})
		}
	case "big.example.":
		if q.Type == dnsmessage.TypeA {
			for i := range 100 {
				add([4]byte{198, 51, 100, byte(i)})
			}
		}
	default:
		resp.Header.RCode = dnsmessage.RCodeNameError
	}
	for _, r := range req.Additionals {
		if r.Header.Type == dnsmessage.TypeOPT && int(r.Header.Class) > max {
			max = int(r.Header.Class)
		}
	}
	out, err := resp.Pack()
	if err != nil {
		return nil
	}
	if len(out) > max {
		resp.Answers, resp.Header.Truncated = nil, true
		out, _ = resp.Pack()
	}
	return out
}

// dnsQuery sends one raw query over network and parses the reply.
func dnsQuery(network, addr, name string, typ dnsmessage.Type) (dnsmessage.Message, error) {
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 0x4242, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}}}
	b, err := q.Pack()
	if err != nil {
		return dnsmessage.Message{}, err
	}
	c, err := net.DialTimeout(network, addr, 2*time.Second)
	if err != nil {
		return dnsmessage.Message{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if network == "tcp" {
		b = append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
	}
	if _, err := c.Write(b); err != nil {
		return dnsmessage.Message{}, err
	}
	buf := make([]byte, 65535)
	var n int
	if network == "tcp" {
		if _, err = io.ReadFull(c, buf[:2]); err == nil {
			n = int(binary.BigEndian.Uint16(buf[:2]))
			_, err = io.ReadFull(c, buf[:n])
		}
	} else {
		n, err = c.Read(buf)
	}
	if err != nil {
		return dnsmessage.Message{}, err
	}
	var m dnsmessage.Message
	err = m.Unpack(buf[:n])
	return m, err
}

// TestDNSProxy runs the binary with --dns-proxy: a mesh name (derived from
// the VIP listener) is answered locally in its short forms, AAAA for it is
// NODATA; an external name is forwarded to the resolv.conf upstream; a
// stock Go resolver gets a truncated UDP answer for a big name, retries
// over TCP and gets every address; the metrics count it all.
func TestDNSProxy(t *testing.T) {
	up := startDNSUpstream(t, "127.0.0.1:0", func(f func() error) error { return f() })
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolv, []byte("nameserver "+up.addr+"\nsearch default.svc.cluster.local svc.cluster.local cluster.local\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startProxy(t, nil, proxyOpts{
		bootstrapExtra: dnsBootstrap,
		args:           []string{"--dns-proxy", dnsAddr, "--dns-resolv-conf", resolv, "--metrics", metricsAddr},
		env:            []string{"POD_NAMESPACE=default"},
	})
	eventually(t, 5*time.Second, func() error {
		_, err := dnsQuery("udp", dnsAddr, "reviews.", dnsmessage.TypeA)
		return err
	})

	tests := []struct {
		network, name string
		typ           dnsmessage.Type
		rcode         dnsmessage.RCode
		want          string
	}{
		{"udp", "reviews.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "[10.99.0.7]"},
		{"udp", "reviews.default.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "[10.99.0.7]"},
		{"tcp", "Reviews.Default.Svc.Cluster.Local.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "[10.99.0.7]"},
		{"udp", "reviews.default.svc.cluster.local.", dnsmessage.TypeAAAA, dnsmessage.RCodeSuccess, "[]"},
		{"udp", "reviews.default.svc.cluster.local.default.svc.cluster.local.", dnsmessage.TypeA, dnsmessage.RCodeNameError, "[]"},
		{"udp", "ext.example.", dnsmessage.TypeA, dnsmessage.RCodeSuccess, "[192.0.2.1]"},
		{"tcp", "nope.example.", dnsmessage.TypeA, dnsmessage.RCodeNameError, "[]"},
	}
	for _, tc := range tests {
		m, err := dnsQuery(tc.network, dnsAddr, tc.name, tc.typ)
		if err != nil {
			t.Errorf("%s %s: %v", tc.network, tc.name, err)
			continue
		}
		var got []string
		for _, r := range m.Answers {
			if a, ok := r.Body.(*dnsmessage.AResource); ok {
				got = append(got, net.IP(a.A[:]).String())
			}
		}
		if m.Header.RCode != tc.rcode || fmt.Sprint(got) != tc.want {
			t.Errorf("%s %s %v: rcode %v answers %v; want %v %s", tc.network, tc.name, tc.typ, m.Header.RCode, got, tc.rcode, tc.want)
		}
	}
	if n := up.queries.Load(); n != 2 {
		t.Errorf("upstream got %d queries, want 2 (ext.example, nope.example)", n)
	}

	// A real client: Go's resolver retries over TCP on TC.
	var networks []string
	var mu sync.Mutex
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		mu.Lock()
		networks = append(networks, network)
		mu.Unlock()
		var d net.Dialer
		return d.DialContext(ctx, network, dnsAddr)
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := r.LookupIP(ctx, "ip4", "big.example.")
	if err != nil || len(ips) != 100 {
		t.Fatalf("big.example: %d addresses, %v", len(ips), err)
	}
	mu.Lock()
	if !slices.Contains(networks, "udp") || !slices.Contains(networks, "tcp") {
		t.Errorf("resolver used %v, want udp then tcp", networks)
	}
	mu.Unlock()

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`istio_dns_requests_total{request_protocol="udp",request_query_type="a"}`,
		`istio_dns_upstream_requests_total{request_protocol="tcp",request_query_type="a"}`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}
