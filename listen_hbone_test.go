package meshlet_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet"
	"github.com/meshlet/meshlet/identity"
)

func issueStatic(t *testing.T, ca *identity.CA, sa string) identity.Static {
	t.Helper()
	cert, err := ca.Issue(identity.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: sa}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return identity.Static{Cert: cert, Pool: ca.Roots()}
}

// hboneClient is a library whose cluster "app" tunnels to target through
// the HBONE server at hboneAddr, which must be spiffe://.../sa/server.
func hboneClient(t *testing.T, src identity.Source, hboneAddr, target string) *meshlet.Server {
	t.Helper()
	h, p, _ := net.SplitHostPort(target)
	boot := fmt.Sprintf(`node: {id: client, cluster: client}
static_resources:
  clusters:
  - name: app
    type: STATIC
    connect_timeout: 1s
    metadata: {filter_metadata: {meshlet.hbone: {address: "%s", identity: "spiffe://cluster.local/ns/default/sa/server"}}}
    load_assignment: {cluster_name: app, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]}
`, hboneAddr, h, p)
	srv := &meshlet.Server{BootstrapYAML: []byte(boot), Identity: src, Logger: quiet}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// ListenHBONE hands each tunneled stream to Accept with TCP semantics:
// the peer's identity, the CONNECT target as LocalAddr, half-close both
// ways, deadlines; RBAC of InboundListener refuses before Accept.
func TestListenHBONE(t *testing.T) {
	ca, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	other, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	srv := &meshlet.Server{BootstrapYAML: []byte(inboundBootstrap), Identity: issueStatic(t, ca, "server"),
		InboundListener: "inbound", Logger: quiet}
	defer srv.Close()
	ln, err := srv.ListenHBONE("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		peer, local string
		deadline    error
	}
	accepted := make(chan seen, 4)
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var s seen
				if id, err := meshlet.PeerIdentity(c); err == nil {
					s.peer = id.String()
				}
				s.local = c.LocalAddr().String()
				_ = c.SetReadDeadline(time.Now().Add(-time.Second))
				_, s.deadline = c.Read(make([]byte, 1))
				_ = c.SetReadDeadline(time.Time{})
				// A request ends with the client's EOF; the answer is
				// sent after it (needs half-close through the tunnel).
				req, err := io.ReadAll(c)
				if err != nil {
					return
				}
				_, _ = c.Write([]byte("got " + string(req)))
				_ = c.(interface{ CloseWrite() error }).CloseWrite()
				accepted <- s
			}()
		}
	}()

	const target = "127.0.0.1:9080"
	tests := []struct {
		name   string
		client identity.Static
		want   bool
	}{
		{"allowed identity", issueStatic(t, ca, "good"), true},
		{"identity denied by RBAC", issueStatic(t, ca, "bad"), false},
		{"certificate from another CA", issueStatic(t, other, "good"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client := hboneClient(t, tc.client, ln.Addr().String(), target)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var got []byte
			c, err := client.Dial(ctx, "tcp", "app:9080")
			if err == nil {
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err = c.Write([]byte("ping")); err == nil {
					if err = c.(interface{ CloseWrite() error }).CloseWrite(); err == nil {
						got, err = io.ReadAll(c)
					}
				}
				c.Close()
			}
			if !tc.want {
				if err == nil && len(got) > 0 {
					t.Fatalf("got %q; want the tunnel refused", got)
				}
				return
			}
			if err != nil || string(got) != "got ping" {
				t.Fatalf("got %q, %v; want %q", got, err, "got ping")
			}
			s := <-accepted
			if s.peer != "spiffe://cluster.local/ns/default/sa/good" {
				t.Errorf("PeerIdentity = %q", s.peer)
			}
			if s.local != target {
				t.Errorf("LocalAddr = %s, want the CONNECT target %s", s.local, target)
			}
			if !errors.Is(s.deadline, os.ErrDeadlineExceeded) {
				t.Errorf("Read past the deadline: %v, want os.ErrDeadlineExceeded", s.deadline)
			}
		})
	}
	select {
	case s := <-accepted:
		t.Errorf("a refused tunnel reached Accept: %+v", s)
	default:
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	<-served
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after the Server closed: %v, want net.ErrClosed", err)
	}
}

// A mesh client offering only Istio's ALPN protocols (as a sidecar's
// cluster does) completes the handshake with Listen, negotiating none;
// an HTTP client still gets h2.
func TestListenALPN(t *testing.T) {
	ca, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	srv := &meshlet.Server{BootstrapYAML: []byte(inboundBootstrap), Identity: issueStatic(t, ca, "server"), Logger: quiet}
	defer srv.Close()
	ln, err := srv.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	defer func() { ln.Close(); <-served }()
	for _, tc := range []struct {
		offer []string
		want  string
	}{
		{[]string{"istio-peer-exchange", "istio"}, ""},
		{[]string{"h2", "http/1.1"}, "h2"},
		{nil, ""},
	} {
		t.Run(strings.Join(tc.offer, ","), func(t *testing.T) {
			cfg := identity.ClientConfig(issueStatic(t, ca, "good"), nil)
			cfg.NextProtos = tc.offer
			c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", ln.Addr().String(), cfg)
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			defer c.Close()
			if got := c.ConnectionState().NegotiatedProtocol; got != tc.want {
				t.Errorf("ALPN = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestListenHBONEErrors(t *testing.T) {
	srv := &meshlet.Server{BootstrapYAML: []byte(inboundBootstrap), Logger: quiet}
	defer srv.Close()
	if _, err := srv.ListenHBONE("tcp", "127.0.0.1:0"); !errors.Is(err, meshlet.ErrNoIdentity) {
		t.Errorf("ListenHBONE without Identity: %v, want ErrNoIdentity", err)
	}
	if _, err := srv.ListenHBONE("udp", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "only tcp") {
		t.Errorf("ListenHBONE udp: %v", err)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := meshlet.PeerIdentity(a); err == nil {
		t.Error("PeerIdentity of a plain connection: no error")
	}
}
