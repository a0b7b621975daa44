package upstream

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

// peerServer accepts on 127.0.0.1 and reports the peer address of each
// connection, which is what an app behind the proxy sees. With cert it
// speaks TLS.
func peerServer(t *testing.T, cert *tls.Certificate) (string, <-chan netip.Addr) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	peers := make(chan netip.Addr, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			peers <- c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
			if cert != nil {
				go func() {
					tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{*cert}})
					_ = tc.Handshake()
					tc.Close()
				}()
				continue
			}
			c.Close()
		}
	}()
	return ln.Addr().String(), peers
}

func nextPeer(t *testing.T, peers <-chan netip.Addr) netip.Addr {
	t.Helper()
	select {
	case p := <-peers:
		return p
	case <-time.After(5 * time.Second):
		t.Fatal("backend saw no connection")
		return netip.Addr{}
	}
}

// TestDialBindsSource: every way the proxy dials a cluster's upstream
// binds upstream_bind_config's address (what the app sees as its peer),
// picking the configured address of the destination's family.
func TestDialBindsSource(t *testing.T) {
	cert, pemCert := selfSigned(t)
	plain, plainPeers := peerServer(t, nil)
	tlsAddr, tlsPeers := peerServer(t, &cert)
	src := func(s string) *state.UpstreamBind { return &state.UpstreamBind{Source: netip.MustParseAddrPort(s)} }
	store := state.NewStore()
	m := NewManager(store, nil)
	defer m.Close()
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["none"] = &state.Cluster{Name: "none", LoadAssignment: cla("none", plain)}
		s.Clusters["bound"] = &state.Cluster{Name: "bound", UpstreamBind: src("127.0.0.6:0"), LoadAssignment: cla("bound", plain)}
		s.Clusters["dual"] = &state.Cluster{Name: "dual", LoadAssignment: cla("dual", plain),
			UpstreamBind: &state.UpstreamBind{Source: netip.MustParseAddrPort("[::1]:0"), Alternate: netip.MustParseAddrPort("127.0.0.7:0")}}
		s.Clusters["tls"] = &state.Cluster{Name: "tls", UpstreamBind: src("127.0.0.6:0"),
			TLS: &state.UpstreamTLS{RootCAPEM: pemCert}, LoadAssignment: cla("tls", tlsAddr)}
		s.Clusters["origdst"] = &state.Cluster{Name: "origdst", Type: state.ClusterOriginalDst, UpstreamBind: src("127.0.0.8:0")}
		return true
	})
	dialHost := func(name string) func(ctx context.Context) (net.Conn, error) {
		return func(ctx context.Context) (net.Conn, error) {
			c := m.Cluster(name)
			h, err := c.Pick(&lb.PickInfo{})
			if err != nil {
				return nil, err
			}
			return c.Dial(ctx, h)
		}
	}
	tests := []struct {
		name  string
		dial  func(ctx context.Context) (net.Conn, error)
		peers <-chan netip.Addr
		want  string
	}{
		{"no bind config", dialHost("none"), plainPeers, "127.0.0.1"},
		{"plain TCP", dialHost("bound"), plainPeers, "127.0.0.6"},
		{"other family's address chosen by destination", dialHost("dual"), plainPeers, "127.0.0.7"},
		{"TLS origination", dialHost("tls"), tlsPeers, "127.0.0.6"},
		{"passthrough", func(ctx context.Context) (net.Conn, error) {
			c := m.Cluster("bound")
			h, _ := c.Pick(&lb.PickInfo{})
			return c.DialPassthrough(ctx, h)
		}, plainPeers, "127.0.0.6"},
		{"ORIGINAL_DST host", func(ctx context.Context) (net.Conn, error) {
			c := m.Cluster("origdst")
			return c.Dial(ctx, c.OriginalDstHost(netip.MustParseAddrPort(plain)))
		}, plainPeers, "127.0.0.8"},
		{"ORIGINAL_DST address (tcp_proxy)", func(ctx context.Context) (net.Conn, error) {
			return m.Cluster("origdst").DialAddr(ctx, netip.MustParseAddrPort(plain))
		}, plainPeers, "127.0.0.8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := tt.dial(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			conn.Close()
			if got := nextPeer(t, tt.peers); got.String() != tt.want {
				t.Errorf("backend saw peer %s, want %s", got, tt.want)
			}
		})
	}
}

// TestDialBindFailure: a source address that cannot be bound fails the
// dial (a connect failure, UF) with an error naming the source.
func TestDialBindFailure(t *testing.T) {
	plain, _ := peerServer(t, nil)
	store := state.NewStore()
	m := NewManager(store, nil)
	defer m.Close()
	bind := func(s string) *state.UpstreamBind { return &state.UpstreamBind{Source: netip.MustParseAddrPort(s)} }
	store.Update(func(s *state.Snapshot) bool {
		// 192.0.2.0/24 is TEST-NET-1: assigned to no interface here.
		s.Clusters["unassigned"] = &state.Cluster{Name: "unassigned", UpstreamBind: bind("192.0.2.55:0"), LoadAssignment: cla("unassigned", plain)}
		s.Clusters["wrong-family"] = &state.Cluster{Name: "wrong-family", UpstreamBind: bind("[::1]:0"), LoadAssignment: cla("wrong-family", plain)}
		return true
	})
	for _, tt := range []struct{ cluster, src string }{
		{"unassigned", "192.0.2.55:0"},
		{"wrong-family", "[::1]:0"},
	} {
		t.Run(tt.cluster, func(t *testing.T) {
			c := m.Cluster(tt.cluster)
			h, err := c.Pick(&lb.PickInfo{})
			if err != nil {
				t.Fatal(err)
			}
			conn, err := c.Dial(context.Background(), h)
			if err == nil {
				conn.Close()
				t.Fatal("dial succeeded, want a bind failure")
			}
			if !strings.Contains(err.Error(), "from "+tt.src) || !strings.Contains(err.Error(), "connect "+plain) {
				t.Errorf("error %q does not name the destination and source %s", err, tt.src)
			}
		})
	}
}
