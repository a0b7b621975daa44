package integration

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/meshlet/meshlet/xds/istiopb/workloadpb"
	"github.com/meshlet/meshlet/xds/workloadtest"
)

// dnsQueryFrom is dnsQuery sent from the local address from: the node
// proxy's DNS server places the asking workload by its source address.
func dnsQueryFrom(network, from, addr, name string, typ dnsmessage.Type) (dnsmessage.Message, error) {
	q := dnsmessage.Message{Header: dnsmessage.Header{ID: 0x5151, RecursionDesired: true},
		Questions: []dnsmessage.Question{{Name: dnsmessage.MustNewName(name), Type: typ, Class: dnsmessage.ClassINET}}}
	b, err := q.Pack()
	if err != nil {
		return dnsmessage.Message{}, err
	}
	src := net.ParseIP(from)
	d := net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.UDPAddr{IP: src}}
	if network == "tcp" {
		d.LocalAddr = &net.TCPAddr{IP: src}
		b = append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
	}
	c, err := d.Dial(network, addr)
	if err != nil {
		return dnsmessage.Message{}, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
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

// TestDNSNodeModeClients runs the binary as a node proxy (ztunnel node ID,
// the Workload API from XDS_ADDRESS) with --dns-proxy and --network net1.
// A hostname that two namespaces define is answered per asking workload,
// placed by the query's source address (loopback addresses stand in for
// pod IPs): the client's namespace's service, only its VIPs on net1; an
// address that is no workload gets the first namespace's; a service whose
// VIPs are all on another network is NODATA, never its remote VIP.
func TestDNSNodeModeClients(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs the whole of 127/8 on loopback")
	}
	cp, err := workloadtest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cp.Stop)
	vip := func(network, ip string) *workloadpb.NetworkAddress {
		return &workloadpb.NetworkAddress{Network: network, Address: netip.MustParseAddr(ip).AsSlice()}
	}
	svc := func(ns, host string, vips ...*workloadpb.NetworkAddress) *workloadpb.Service {
		return &workloadpb.Service{Name: "api", Namespace: ns, Hostname: host, Addresses: vips,
			Ports: []*workloadpb.Port{{ServicePort: 80, TargetPort: 8080}}}
	}
	wa := workloadtest.Workload("a", "ns-a", "a", "node1", "127.0.0.52", true)
	wb := workloadtest.Workload("b", "ns-b", "b", "node1", "127.0.0.53", true)
	wa.Network, wb.Network = "net1", "net1"
	for _, err := range []error{
		cp.SetWorkloads(wa, wb),
		cp.SetServices(
			svc("ns-a", "api.example.com", vip("net1", "10.61.0.1")),
			svc("ns-b", "api.example.com", vip("net1", "10.62.0.1"), vip("net2", "10.62.0.2")),
			svc("ns-b", "far.ns-b.svc.cluster.local", vip("net2", "10.63.0.1")),
		),
		cp.SetPolicies(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	resolv := filepath.Join(dir, "resolv.conf")
	boot := filepath.Join(dir, "bootstrap.yaml")
	bs := fmt.Sprintf("node: {id: ztunnel~127.0.0.1~ztunnel.istio-system~istio-system.svc.cluster.local, cluster: test}\n"+
		"admin: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}\n", freePort(t))
	for path, body := range map[string]string{resolv: "nameserver 127.0.0.1:1\n", boot: bs} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dnsAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cmd := exec.Command(binPath, "run", "--bootstrap", boot, "--dns-proxy", dnsAddr, "--dns-resolv-conf", resolv,
		"--dns-nds=false", "--network", "net1", "--metrics", "", "--drain-time", "1s")
	cmd.Env = append(os.Environ(), "XDS_ADDRESS="+cp.Addr)
	startNetnsProxy(t, cmd, nil, "dns proxy listening")

	a := func(m dnsmessage.Message) string {
		var got []string
		for _, r := range m.Answers {
			if x, ok := r.Body.(*dnsmessage.AResource); ok {
				got = append(got, net.IP(x.A[:]).String())
			}
		}
		return fmt.Sprint(m.Header.RCode, got)
	}
	// The Workload API arrives after the listener: wait for it.
	eventually(t, 10*time.Second, func() error {
		m, err := dnsQueryFrom("udp", "127.0.0.53", dnsAddr, "api.example.com.", dnsmessage.TypeA)
		if err != nil {
			return err
		}
		if got := a(m); got != "RCodeSuccess [10.62.0.1]" {
			return fmt.Errorf("not yet: %s", got)
		}
		return nil
	})
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range []struct{ from, name, want string }{
			{"127.0.0.52", "api.example.com.", "RCodeSuccess [10.61.0.1]"},
			{"127.0.0.53", "api.example.com.", "RCodeSuccess [10.62.0.1]"},
			{"127.0.0.54", "api.example.com.", "RCodeSuccess [10.61.0.1]"}, // no workload: the first namespace's
			{"127.0.0.53", "far.ns-b.svc.cluster.local.", "RCodeSuccess []"},
			{"127.0.0.53", "far.ns-b.", "RCodeSuccess []"},
		} {
			m, err := dnsQueryFrom(network, tc.from, dnsAddr, tc.name, dnsmessage.TypeA)
			if err != nil {
				t.Errorf("%s %s from %s: %v", network, tc.name, tc.from, err)
				continue
			}
			if got := a(m); got != tc.want || !m.Header.Authoritative {
				t.Errorf("%s %s from %s: %s (authoritative %v), want %s from the table", network, tc.name, tc.from, got, m.Header.Authoritative, tc.want)
			}
		}
	}
}
