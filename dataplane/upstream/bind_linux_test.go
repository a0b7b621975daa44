package upstream

import (
	"context"
	"net"
	"net/netip"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

func sockoptInt(t *testing.T, rc interface {
	Control(func(uintptr)) error
}, level, opt int) int {
	t.Helper()
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) { v, gerr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if gerr != nil {
		t.Fatal(gerr)
	}
	return v
}

// TestFreebindSetsOption: freebind sets IP_FREEBIND (IPV6_FREEBIND) on the
// socket, and binding an address no interface has then succeeds.
func TestFreebindSetsOption(t *testing.T) {
	for _, tc := range []struct {
		network, addr string
		level, opt    int
	}{
		{"tcp4", "192.0.2.55:0", unix.IPPROTO_IP, unix.IP_FREEBIND},
		{"tcp6", "[2001:db8::55]:0", unix.IPPROTO_IPV6, unix.IPV6_FREEBIND},
	} {
		t.Run(tc.network, func(t *testing.T) {
			lc := net.ListenConfig{Control: withFreebind(nil)}
			ln, err := lc.Listen(context.Background(), tc.network, tc.addr)
			if err != nil {
				t.Fatalf("bind %s with freebind: %v", tc.addr, err)
			}
			defer ln.Close()
			rc, err := ln.(*net.TCPListener).SyscallConn()
			if err != nil {
				t.Fatal(err)
			}
			if v := sockoptInt(t, rc, tc.level, tc.opt); v != 1 {
				t.Errorf("freebind option = %d, want 1", v)
			}
		})
	}
}

// TestBindKeepsMark: with a bind address (and freebind) the Manager's
// SO_MARK still applies, so capture rules keep skipping proxy sockets.
func TestBindKeepsMark(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "true" {
			t.Fatal("needs CAP_NET_ADMIN (root) to set SO_MARK")
		}
		t.Skip("needs CAP_NET_ADMIN (root) to set SO_MARK")
	}
	plain, peers := peerServer(t, nil)
	store := state.NewStore()
	m := NewManager(store, nil)
	defer m.Close()
	m.SetMark(0x539)
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["c"] = &state.Cluster{Name: "c", LoadAssignment: cla("c", plain),
			UpstreamBind: &state.UpstreamBind{Source: netip.MustParseAddrPort("127.0.0.6:0"), Freebind: true}}
		return true
	})
	c := m.Cluster("c")
	conn, err := c.Dial(context.Background(), &lb.Host{Address: plain})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := socketMark(t, conn); got != 0x539 {
		t.Errorf("SO_MARK = %#x, want 0x539", got)
	}
	rc, _ := conn.(*net.TCPConn).SyscallConn()
	if v := sockoptInt(t, rc, unix.IPPROTO_IP, unix.IP_FREEBIND); v != 1 {
		t.Errorf("IP_FREEBIND = %d, want 1", v)
	}
	if got := nextPeer(t, peers); got.String() != "127.0.0.6" {
		t.Errorf("backend saw peer %s, want 127.0.0.6", got)
	}
}
