package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet"
	"github.com/meshlet/meshlet/identity"
)

// The embeddable library and the ztunnel binary are the same mesh: the
// library's Dial reaches the proxy's mTLS and HBONE inbounds, and the
// proxy's mTLS and HBONE clusters reach the library's Listen and
// ListenHBONE, all with identities from one built-in CA directory.

const (
	libID   = "spiffe://cluster.local/ns/default/sa/lib"
	otherID = "spiffe://cluster.local/ns/default/sa/other"
)

// libIdentity issues sa's certificate from the built-in CA in caDir, the
// directory the proxies get as --ca-dir.
func libIdentity(t *testing.T, caDir, sa string) identity.Source {
	t.Helper()
	ca, err := identity.LoadOrCreateCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	src, err := ca.Source(context.Background(), identity.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: sa}, time.Hour, identity.RotationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(src.Close)
	return src
}

// startLibrary starts srv (quiet) and closes it with the test.
func startLibrary(t *testing.T, srv *meshlet.Server) *meshlet.Server {
	t.Helper()
	srv.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Start(ctx); err != nil {
		t.Fatal(err)
	}
	return srv
}

// accepted is what the library's side saw of one connection.
type accepted struct {
	peer          string
	local, remote string
}

// serveEcho echoes every connection ln accepts (half-closing after the
// client's EOF) and reports each one's peer identity and addresses.
func serveEcho(t *testing.T, ln net.Listener) <-chan accepted {
	t.Helper()
	seen := make(chan accepted, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a := accepted{local: c.LocalAddr().String(), remote: c.RemoteAddr().String()}
			if id, err := meshlet.PeerIdentity(c); err == nil {
				a.peer = id.String()
			} else {
				a.peer = "error: " + err.Error()
			}
			select {
			case seen <- a:
			default:
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
				if cw, ok := c.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
				}
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return seen
}

// echoConn writes msg on c, half-closes and reads the echo to EOF.
func echoConn(c net.Conn, msg string) (string, error) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		return "", err
	}
	b, err := io.ReadAll(c)
	return string(b), err
}

// libDialEcho dials address through the library and echoes msg.
func libDialEcho(srv *meshlet.Server, address, msg string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := srv.Dial(ctx, "tcp", address)
	if err != nil {
		return "", err
	}
	return echoConn(c, msg)
}

// noAccept fails when the library accepted a connection.
func noAccept(t *testing.T, seen <-chan accepted) {
	t.Helper()
	select {
	case a := <-seen:
		t.Fatalf("library accepted a connection from %s (peer %s); want it refused before Accept", a.remote, a.peer)
	case <-time.After(200 * time.Millisecond):
	}
}

func nextAccepted(t *testing.T, seen <-chan accepted) accepted {
	t.Helper()
	select {
	case a := <-seen:
		return a
	case <-time.After(5 * time.Second):
		t.Fatal("library accepted nothing")
		return accepted{}
	}
}

// rbacInbound is a library-side listener (never bound by the library)
// whose network RBAC admits only principal.
func rbacInbound(name, principal string) string {
	return fmt.Sprintf(`  - name: %s
    address: {socket_address: {address: 127.0.0.1, port_value: 15006}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.rbac
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC
          stat_prefix: lib
          rules:
            action: ALLOW
            policies:
              only:
                permissions: [{any: true}]
                principals: [{authenticated: {principal_name: {exact: "%s"}}}]
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: lib, cluster: unused}
`, name, principal)
}

const unusedCluster = `  - name: unused
    type: STATIC
    connect_timeout: 1s
    load_assignment: {cluster_name: unused, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}
`

// loggedInbound is a STRICT mTLS inbound requiring clientID, proxying to
// cluster, with an access log of the peer's URI SAN at logPath.
func loggedInbound(name, addr, clientID, cluster, logPath string) string {
	chain := serverChain(clientID, cluster)
	chain = strings.Replace(chain, "stat_prefix: in, cluster: "+cluster+"}",
		fmt.Sprintf(`stat_prefix: in, cluster: %s, access_log: [{name: envoy.access_loggers.file, typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: "%s", log_format: {text_format_source: {inline_string: "%%DOWNSTREAM_PEER_URI_SAN%% %%UPSTREAM_CLUSTER%%\n"}}}}]}`, cluster, logPath), 1)
	return listenerYAML(name, addr, chain)
}

// TestLibraryInteropMTLS: library Dial -> proxy STRICT inbound (the proxy
// logs and counts the library's SPIFFE ID), and proxy mTLS cluster ->
// library Listen (the library sees the proxy's ID; RBAC refuses another).
func TestLibraryInteropMTLS(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	libSrc := libIdentity(t, caDir, "lib")
	echo := startTCPEcho(t)

	// Every address is chosen first: the library's configuration names the
	// proxy's inbound and the proxy's names the library's listener.
	strict, toLib, otherToLib, metrics, libAddr := loopAddr(t), loopAddr(t), loopAddr(t), loopAddr(t), loopAddr(t)
	lib := startLibrary(t, &meshlet.Server{Identity: libSrc, InboundListener: "inbound_lib",
		BootstrapYAML: []byte("static_resources:\n  listeners:\n" + rbacInbound("inbound_lib", mtlsServerID) +
			"  clusters:\n" + unusedCluster +
			staticCluster("outbound|80||server.default.svc.cluster.local", strict, meshTLS(mtlsServerID, false)) +
			staticCluster("wrong-san", strict, meshTLS(otherID, false)))})
	libLn, err := lib.Listen("tcp", libAddr)
	if err != nil {
		t.Fatal(err)
	}
	seen := serveEcho(t, libLn)

	// The proxy: a STRICT inbound for the library, and an outbound
	// listener whose cluster reaches the library's Listen over mTLS.
	logPath := filepath.Join(t.TempDir(), "access.log")
	proxyRes := "static_resources:\n  listeners:\n" +
		loggedInbound("inbound_strict", strict, libID, "backend", logPath) +
		plainListener("to-lib", toLib, "lib") +
		"  clusters:\n" + staticCluster("backend", echo, "") +
		staticCluster("lib", libAddr, meshTLS(libID, false))
	runMTLSProxy(t, proxyRes, []string{"SERVICE_ACCOUNT=server"}, "--ca-dir", caDir, "--metrics", metrics)

	// A second proxy with an identity the library's RBAC does not admit.
	runMTLSProxy(t, "static_resources:\n  listeners:\n"+plainListener("to-lib", otherToLib, "lib")+
		"  clusters:\n"+staticCluster("lib", libAddr, meshTLS(libID, false)),
		[]string{"SERVICE_ACCOUNT=other"}, "--ca-dir", caDir)

	t.Run("library Dial to proxy STRICT inbound", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := lib.Dial(ctx, "tcp", "server.default.svc.cluster.local:80")
		if err != nil {
			t.Fatal(err)
		}
		if id, err := meshlet.PeerIdentity(c); err != nil || id.String() != mtlsServerID {
			t.Errorf("PeerIdentity of the dialed connection = %v, %v; want the proxy's %s", id, err, mtlsServerID)
		}
		got, err := echoConn(c, "from the library")
		if err != nil || got != "from the library" {
			t.Fatalf("echo = %q, %v", got, err)
		}
		lines := logLines(t, logPath, 1)
		if want := libID + " backend"; lines[0] != want {
			t.Errorf("proxy access log = %q, want %q", lines[0], want)
		}
		eventually(t, 5*time.Second, func() error {
			fams := scrape(t, "http://"+metrics+"/metrics")
			sel := map[string]string{"reporter": "destination", "source_principal": libID, "connection_security_policy": "mutual_tls"}
			if n := sumWhere(fams, "istio_tcp_connections_opened_total", sel); n != 1 {
				return fmt.Errorf("istio_tcp_connections_opened_total%v = %v, want 1", sel, n)
			}
			return nil
		})
	})
	t.Run("library refuses a proxy with the wrong SAN", func(t *testing.T) {
		if got, err := libDialEcho(lib, "wrong-san:80", "x"); err == nil {
			t.Fatalf("echo = %q; want the dial refused", got)
		}
	})
	t.Run("proxy refuses a library from another CA", func(t *testing.T) {
		stranger := startLibrary(t, &meshlet.Server{Identity: libIdentity(t, filepath.Join(t.TempDir(), "ca"), "lib"), BootstrapYAML: lib.BootstrapYAML})
		if got, err := libDialEcho(stranger, "server.default.svc.cluster.local:80", "x"); err == nil && got != "" {
			t.Fatalf("echo = %q; want refused", got)
		}
	})
	t.Run("proxy mTLS cluster to library Listen", func(t *testing.T) {
		got, err := echoOnce(toLib, "from the proxy")
		if err != nil || got != "from the proxy" {
			t.Fatalf("echo = %q, %v", got, err)
		}
		if a := nextAccepted(t, seen); a.peer != mtlsServerID {
			t.Errorf("library saw peer %q, want the proxy's %q", a.peer, mtlsServerID)
		}
	})
	t.Run("library RBAC refuses another identity", func(t *testing.T) {
		if got, err := echoOnce(otherToLib, "x"); err == nil || got != "" {
			t.Fatalf("echo = %q, %v; want the connection closed with no data", got, err)
		}
		noAccept(t, seen)
	})
}

// hboneClusterTo is a static cluster tunneling to target through HBONE at
// hboneAddr, whose server must be identity (meshlet.hbone metadata).
func hboneClusterTo(name, target, hboneAddr, identity string) string {
	h, p, _ := net.SplitHostPort(target)
	return fmt.Sprintf(`  - name: %s
    type: STATIC
    connect_timeout: 2s
    metadata: {filter_metadata: {meshlet.hbone: {address: "%s", identity: "%s"}}}
    load_assignment:
      cluster_name: %s
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: %s, port_value: %s}}}}]}]
`, name, hboneAddr, identity, name, h, p)
}

// TestLibraryInteropHBONE: library Dial over HBONE (meshlet.hbone metadata
// and Istio's internal-listener shape) -> proxy --hbone-inbound, and the
// proxy's HBONE cluster -> library ListenHBONE with the peer's identity,
// the forwarded source and RBAC.
func TestLibraryInteropHBONE(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	libSrc := libIdentity(t, caDir, "lib")
	echo := startTCPEcho(t)
	hbonePort := freePort(t)
	proxyHBONE := fmt.Sprintf("127.0.0.1:%d", hbonePort)

	lib := startLibrary(t, &meshlet.Server{Identity: libSrc, InboundListener: "inbound_lib",
		BootstrapYAML: []byte("static_resources:\n  listeners:\n" + rbacInbound("inbound_lib", mtlsServerID) +
			"  clusters:\n" + unusedCluster + hboneClusterTo("echo-hb", echo, proxyHBONE, mtlsServerID) +
			hboneClusterTo("wrong-id", echo, proxyHBONE, otherID))})
	libLn, err := lib.ListenHBONE("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	seen := serveEcho(t, libLn)

	// The proxy accepts HBONE for its workload (the echo) and tunnels its
	// "out" listener to the library. The CONNECT target is an address the
	// library's application is "at"; the library delivers whatever the
	// peer may reach.
	const appTarget = "127.0.0.1:9080"
	toLib, otherToLib, metrics := loopAddr(t), loopAddr(t), loopAddr(t)
	runMTLSProxy(t, tunneledTCP(t, toLib, appTarget, libLn.Addr().String(), libID), []string{"SERVICE_ACCOUNT=server"},
		"--ca-dir", caDir, "--hbone-inbound", proxyHBONE, "--metrics", metrics)
	runMTLSProxy(t, tunneledTCP(t, otherToLib, appTarget, libLn.Addr().String(), libID), []string{"SERVICE_ACCOUNT=other"},
		"--ca-dir", caDir)

	t.Run("library Dial over a meshlet.hbone cluster", func(t *testing.T) {
		got, err := libDialEcho(lib, "echo-hb:9000", "tunneled by the library")
		if err != nil || got != "tunneled by the library" {
			t.Fatalf("echo = %q, %v", got, err)
		}
		eventually(t, 5*time.Second, func() error {
			sel := map[string]string{"reporter": "destination", "source_principal": libID}
			if n := sumWhere(scrape(t, "http://"+metrics+"/metrics"), "istio_tcp_connections_opened_total", sel); n < 1 {
				return fmt.Errorf("istio_tcp_connections_opened_total%v = %v, want the library's tunnel", sel, n)
			}
			return nil
		})
	})
	t.Run("library refuses an HBONE server with the wrong identity", func(t *testing.T) {
		if got, err := libDialEcho(lib, "wrong-id:9000", "x"); err == nil && got != "" {
			t.Fatalf("echo = %q; want refused", got)
		}
	})
	t.Run("library Dial in Istio's internal-listener shape", func(t *testing.T) {
		cp := startControlPlane(t)
		cp.set(istioHBONE(t, loopAddr(t), echo, uint32(hbonePort), "spiffe://cluster.local/ns/default/sa/")...)
		istio := startLibrary(t, &meshlet.Server{ADSAddress: cp.addr, Identity: libSrc})
		eventually(t, 10*time.Second, func() error {
			got, err := libDialEcho(istio, "echo.default.svc.cluster.local:9000", "istio shaped")
			if err != nil || got != "istio shaped" {
				return fmt.Errorf("echo = %q, %v", got, err)
			}
			return nil
		})
		if nacks := cp.nackMessages(); len(nacks) > 0 {
			t.Fatalf("NACKs: %v", nacks)
		}
	})
	t.Run("proxy HBONE cluster to library ListenHBONE", func(t *testing.T) {
		got, err := echoOnce(toLib, "tunneled by the proxy")
		if err != nil || got != "tunneled by the proxy" {
			t.Fatalf("echo = %q, %v", got, err)
		}
		a := nextAccepted(t, seen)
		if a.peer != mtlsServerID {
			t.Errorf("library saw peer %q, want the proxy's %q", a.peer, mtlsServerID)
		}
		if a.local != appTarget {
			t.Errorf("LocalAddr = %s, want the CONNECT target %s", a.local, appTarget)
		}
		if host, _, _ := net.SplitHostPort(a.remote); host != "127.0.0.1" {
			t.Errorf("RemoteAddr = %s, want the proxy's downstream client 127.0.0.1", a.remote)
		}
	})
	t.Run("library RBAC refuses another tunnel peer", func(t *testing.T) {
		if got, err := echoOnce(otherToLib, "x"); err == nil || got != "" {
			t.Fatalf("echo = %q, %v; want the connection closed with no data", got, err)
		}
		noAccept(t, seen)
	})
	t.Run("closing the Server ends the HBONE listener", func(t *testing.T) {
		if err := lib.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := libLn.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	})
}
