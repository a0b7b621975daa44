package dns

import (
	"encoding/binary"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/meshlet/meshlet/state"
)

// askFrom sends one A query from the local address from (any port) over
// network and returns the answer's addresses.
func askFrom(t *testing.T, network string, from netip.Addr, addr netip.AddrPort, name string) []string {
	t.Helper()
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 7, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}}}
	b, _ := q.Pack()
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.UDPAddr{IP: from.AsSlice()}}
	if network == "tcp" {
		d.LocalAddr = &net.TCPAddr{IP: from.AsSlice()}
	}
	c, err := d.Dial(network, addr.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	var r []byte
	if network == "tcp" {
		if _, err = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)); err == nil {
			r, err = readTCPMsg(c)
		}
	} else if _, err = c.Write(b); err == nil {
		buf := make([]byte, 1500)
		var n int
		n, err = c.Read(buf)
		r = buf[:n]
	}
	if err != nil {
		t.Fatalf("%s %s from %s: %v", network, name, from, err)
	}
	var m dnsmessage.Message
	if err := m.Unpack(r); err != nil || m.Header.RCode != dnsmessage.RCodeSuccess {
		t.Fatalf("%s %s from %s: %v rcode %v", network, name, from, err, m.Header.RCode)
	}
	return answerAddrs(m)
}

// TestServerClients: the server places each query's source address (UDP
// and TCP) as a workload of the store and answers a hostname two
// namespaces define with the asking workload's namespace's service, only
// its VIPs on the proxy's network; an address that is no workload gets
// the first service's.
func TestServerClients(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs the whole of 127/8 on loopback")
	}
	store := state.NewStore()
	ws := map[string]*state.Workload{
		"a": {UID: "a", Namespace: "ns-a", Network: "net1", Addresses: addrs("127.0.0.2")},
		"b": {UID: "b", Namespace: "ns-b", Network: "net1", Addresses: addrs("127.0.0.3")},
	}
	sa := &state.Service{Name: "api", Namespace: "ns-a", Hostname: "api.example.com", Addresses: vips("net1", "10.1.0.1")}
	sb := &state.Service{Name: "api", Namespace: "ns-b", Hostname: "api.example.com",
		Addresses: append(vips("net1", "10.2.0.1"), vips("net2", "10.2.0.2")...)}
	store.Update(func(s *state.Snapshot) bool {
		s.Ambient = state.NewAmbient(ws, map[string]*state.Service{sa.Key(): sa, sb.Key(): sb}, nil)
		return true
	})
	tab := NewTable(TableConfig{Namespace: "istio-system", Network: "net1"})
	tab.WatchStore(store)
	s := startServer(t, Config{Table: tab, Clients: StoreClients(store, "net1")})
	addr := s.Addrs()[0]
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range []struct {
			from string
			want []string
		}{
			{"127.0.0.2", []string{"10.1.0.1"}},
			{"127.0.0.3", []string{"10.2.0.1"}},
			{"127.0.0.4", []string{"10.1.0.1"}},
		} {
			got := askFrom(t, network, netip.MustParseAddr(tc.from), addr, "api.example.com.")
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s from %s: %v, want %v", network, tc.from, got, tc.want)
			}
		}
	}
}

// TestServerBareNames: over UDP and TCP, a bare service name is answered
// with the service of the asking workload's namespace, and one the server
// cannot place gets the proxy namespace's.
func TestServerBareNames(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs the whole of 127/8 on loopback")
	}
	store := state.NewStore()
	ws := map[string]*state.Workload{
		"a": {UID: "a", Namespace: "ns-a", Network: "net1", Addresses: addrs("127.0.0.2")},
		"b": {UID: "b", Namespace: "ns-b", Network: "net1", Addresses: addrs("127.0.0.3")},
	}
	svcs := map[string]*state.Service{}
	for ns, vip := range map[string]string{"ns-a": "10.1.0.1", "ns-b": "10.2.0.1", "istio-system": "10.3.0.1"} {
		s := &state.Service{Name: "web", Namespace: ns, Hostname: "web." + ns + ".svc.cluster.local", Addresses: vips("net1", vip)}
		svcs[s.Key()] = s
	}
	store.Update(func(s *state.Snapshot) bool {
		s.Ambient = state.NewAmbient(ws, svcs, nil)
		return true
	})
	tab := NewTable(TableConfig{Namespace: "istio-system", Network: "net1"})
	tab.WatchStore(store)
	s := startServer(t, Config{Table: tab, Clients: StoreClients(store, "net1")})
	addr := s.Addrs()[0]
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range []struct {
			from string
			want []string
		}{
			{"127.0.0.2", []string{"10.1.0.1"}},
			{"127.0.0.3", []string{"10.2.0.1"}},
			{"127.0.0.4", []string{"10.3.0.1"}},
		} {
			got := askFrom(t, network, netip.MustParseAddr(tc.from), addr, "web.")
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s web. from %s: %v, want %v", network, tc.from, got, tc.want)
			}
		}
	}
}
