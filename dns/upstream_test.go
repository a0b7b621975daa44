package dns

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// fakeUpstream is a DNS server on loopback answering from fixed records,
// over UDP (truncating to the client's size like a real server) and TCP.
type fakeUpstream struct {
	addr    string
	udp     *net.UDPConn
	tcp     *net.TCPListener
	queries atomic.Int64
	tcpQs   atomic.Int64
	silent  bool // read queries, never answer
	wg      sync.WaitGroup
}

func startUpstream(t *testing.T, silent bool) *fakeUpstream {
	t.Helper()
	uc, tl, err := listenPair("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &fakeUpstream{addr: uc.LocalAddr().String(), udp: uc, tcp: tl, silent: silent}
	u.wg.Add(2)
	go u.serveUDP()
	go u.serveTCP()
	t.Cleanup(func() { uc.Close(); tl.Close(); u.wg.Wait() })
	return u
}

// deadAddr is a loopback UDP/TCP address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	uc, tl, err := listenPair("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := uc.LocalAddr().String()
	uc.Close()
	tl.Close()
	return a
}

func (u *fakeUpstream) serveUDP() {
	defer u.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := u.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		u.queries.Add(1)
		if u.silent {
			continue
		}
		if r := upstreamAnswer(buf[:n], false); r != nil {
			_, _ = u.udp.WriteToUDPAddrPort(r, from)
		}
	}
}

func (u *fakeUpstream) serveTCP() {
	defer u.wg.Done()
	var conns sync.WaitGroup
	defer conns.Wait()
	for {
		c, err := u.tcp.Accept()
		if err != nil {
			return
		}
		conns.Add(1)
		go func() {
			defer conns.Done()
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			for {
				b, err := readTCPMsg(c)
				if err != nil {
					return
				}
				u.queries.Add(1)
				u.tcpQs.Add(1)
				r := upstreamAnswer(b, true)
				if r == nil || u.silent {
					return
				}
				out := binary.BigEndian.AppendUint16(nil, uint16(len(r)))
				if _, err := c.Write(append(out, r...)); err != nil {
					return
				}
			}
		}()
	}
}

// upstreamAnswer knows ext.example (A 192.0.2.1, TTL 60), big.example
// (100 A records), nx.example (NXDOMAIN with a SOA) and fail.example
// (SERVFAIL).
func upstreamAnswer(b []byte, tcp bool) []byte {
	var req dnsmessage.Message
	if err := req.Unpack(b); err != nil || len(req.Questions) != 1 {
		return nil
	}
	q := req.Questions[0]
	resp := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: req.Header.ID, Response: true, RecursionDesired: req.Header.RecursionDesired, RecursionAvailable: true},
		Questions: req.Questions,
	}
	a := func(ip [4]byte) dnsmessage.Resource {
		return dnsmessage.Resource{
			Header: dnsmessage.ResourceHeader{Name: q.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60},
			Body:   &dnsmessage.AResource{A: ip},
		}
	}
	switch name := strings.ToLower(q.Name.String()); {
	case name == "ext.example." && q.Type == dnsmessage.TypeA:
		resp.Answers = append(resp.Answers, a([4]byte{192, 0, 2, 1}))
	case name == "big.example." && q.Type == dnsmessage.TypeA:
		for i := range 100 {
			resp.Answers = append(resp.Answers, a([4]byte{198, 51, 100, byte(i)}))
		}
	case name == "nx.example.":
		resp.Header.RCode = dnsmessage.RCodeNameError
		resp.Authorities = append(resp.Authorities, dnsmessage.Resource{
			Header: dnsmessage.ResourceHeader{Name: dnsmessage.MustNewName("example."), Type: dnsmessage.TypeSOA, Class: dnsmessage.ClassINET, TTL: 300},
			Body:   &dnsmessage.SOAResource{NS: dnsmessage.MustNewName("ns.example."), MBox: dnsmessage.MustNewName("h.example."), MinTTL: 10},
		})
	case name == "fail.example.":
		resp.Header.RCode = dnsmessage.RCodeServerFailure
	}
	size := 512
	for _, r := range req.Additionals {
		if r.Header.Type == dnsmessage.TypeOPT && int(r.Header.Class) > size {
			size = int(r.Header.Class)
		}
	}
	out, err := resp.Pack()
	if err != nil {
		return nil
	}
	if !tcp && len(out) > size {
		resp.Answers, resp.Header.Truncated = nil, true
		out, _ = resp.Pack()
	}
	return out
}

// ask sends one query for name/type to addr over network and returns the
// parsed reply. ednsSize > 0 adds an OPT record offering that size.
func ask(t *testing.T, network string, addr netip.AddrPort, name string, typ dnsmessage.Type, ednsSize int) dnsmessage.Message {
	t.Helper()
	m, err := tryAsk(network, addr, name, typ, ednsSize)
	if err != nil {
		t.Fatalf("%s %s %v: %v", network, name, typ, err)
	}
	return m
}

func tryAsk(network string, addr netip.AddrPort, name string, typ dnsmessage.Type, ednsSize int) (dnsmessage.Message, error) {
	q := dnsmessage.Message{
		Header:    dnsmessage.Header{ID: 0x1234, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}},
	}
	if ednsSize > 0 {
		var rh dnsmessage.ResourceHeader
		_ = rh.SetEDNS0(ednsSize, dnsmessage.RCodeSuccess, false)
		q.Additionals = []dnsmessage.Resource{{Header: rh, Body: &dnsmessage.OPTResource{}}}
	}
	b, err := q.Pack()
	if err != nil {
		return dnsmessage.Message{}, err
	}
	r, err := rawAsk(network, addr, b, 3*time.Second)
	if err != nil {
		return dnsmessage.Message{}, err
	}
	var m dnsmessage.Message
	if err := m.Unpack(r); err != nil {
		return m, err
	}
	if m.Header.ID != 0x1234 {
		return m, errors.New("reply ID mismatch")
	}
	return m, nil
}

// rawAsk sends b and returns the raw reply.
func rawAsk(network string, addr netip.AddrPort, b []byte, timeout time.Duration) ([]byte, error) {
	c, err := net.DialTimeout(network, addr.String(), 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if network == "tcp" {
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)); err != nil {
			return nil, err
		}
		return readTCPMsg(c)
	}
	if _, err := c.Write(b); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}
