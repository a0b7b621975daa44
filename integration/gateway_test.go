package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

// gwBackend is a TLS server with its own self-signed certificate that
// greets every connection with its name and then echoes.
type gwBackend struct {
	name string
	addr string
	leaf [32]byte // SHA-256 of the certificate it presents
}

func startGWBackend(t *testing.T, name string) *gwBackend {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := fmt.Fprintf(c, "%s\n", name); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return &gwBackend{name: name, addr: ln.Addr().String(), leaf: sha256.Sum256(der)}
}

// gwDial opens a TLS connection to addr with server name sni and returns
// the backend's greeting and the SHA-256 of the leaf certificate the
// client saw. The client checks the certificate by fingerprint, not name:
// the Istio SNI form is a routing key, not the certificate's name.
func gwDial(addr, sni string) (greeting string, leaf [32]byte, err error) {
	raw, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", leaf, err
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(raw, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		return "", leaf, fmt.Errorf("handshake: %w", err)
	}
	leaf = sha256.Sum256(tc.ConnectionState().PeerCertificates[0].Raw)
	line := make([]byte, 0, 64)
	b := make([]byte, 1)
	for len(line) < 64 {
		if _, err := io.ReadFull(tc, b); err != nil {
			return "", leaf, fmt.Errorf("greeting: %w", err)
		}
		if b[0] == '\n' {
			break
		}
		line = append(line, b[0])
	}
	// Bytes after the handshake still flow both ways.
	if _, err := tc.Write([]byte("echo")); err != nil {
		return "", leaf, err
	}
	echo := make([]byte, 4)
	if _, err := io.ReadFull(tc, echo); err != nil || string(echo) != "echo" {
		return "", leaf, fmt.Errorf("echo: %q %v", echo, err)
	}
	return string(line), leaf, nil
}

// sniListener is the listener istiod generates for an AUTO_PASSTHROUGH
// gateway: tls_inspector, then one filter chain per server name with a
// tcp_proxy to that name's cluster.
func sniListener(t *testing.T, name, addr string, routes map[string]string) *listenerv3.Listener {
	t.Helper()
	l := listenerOn(t, name, addr, nil)
	l.ListenerFilters = []*listenerv3.ListenerFilter{{
		Name:       "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: anyOf(t, &tlsinspectorv3.TlsInspector{})},
	}}
	l.FilterChains = nil
	for sni, cluster := range routes {
		tp := &tcpv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}}
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{
			FilterChainMatch: &listenerv3.FilterChainMatch{ServerNames: []string{sni}},
			Filters: []*listenerv3.Filter{{
				Name:       "envoy.filters.network.tcp_proxy",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, tp)},
			}},
		})
	}
	return l
}

// TestSNIGateway: the binary's --gateway routes TLS connections by server
// name (Istio's outbound_ form and a --gateway-host name) to two backends
// without terminating them, so each client sees its backend's own
// certificate; unknown names are refused and logged. An xDS listener of
// the shape istiod generates for AUTO_PASSTHROUGH gateways does the same
// through the normal listener path.
func TestSNIGateway(t *testing.T) {
	cp := startControlPlane(t)
	a, b := startGWBackend(t, "a.mesh.local"), startGWBackend(t, "b.example.com")
	if a.leaf == b.leaf {
		t.Fatal("backends share a certificate")
	}
	const clusterA = "outbound|8443||a.mesh.local"
	const sniA = "outbound_.8443_._.a.mesh.local"
	xdsAddr := loopAddr(t)
	cp.set(
		edsCluster(clusterA, clusterv3.Cluster_ROUND_ROBIN, false),
		endpoints(t, clusterA, a.addr),
		edsCluster("b-backend", clusterv3.Cluster_ROUND_ROBIN, false),
		endpoints(t, "b-backend", b.addr),
		// istiod's sni-dnat copy of the service cluster, named like the SNI,
		// which its AUTO_PASSTHROUGH listener chains point at.
		edsCluster(sniA, clusterv3.Cluster_ROUND_ROBIN, false),
		endpoints(t, sniA, a.addr),
		sniListener(t, "gateway-xds", xdsAddr, map[string]string{sniA: sniA, "b.example.com": "b-backend"}),
	)
	gwAddr := loopAddr(t)
	p := startProxy(t, cp, proxyOpts{args: []string{"--gateway", gwAddr, "--gateway-host", "B.example.com=b-backend"}})

	for _, gw := range []struct{ name, addr string }{{"flag", gwAddr}, {"xds-listener", xdsAddr}} {
		t.Run(gw.name, func(t *testing.T) {
			for _, tt := range []struct {
				sni  string
				want *gwBackend
			}{{sniA, a}, {"b.example.com", b}} {
				var greeting string
				var leaf [32]byte
				// The listener and clusters arrive over xDS; the first
				// connections may race them.
				eventually(t, 5*time.Second, func() error {
					var err error
					greeting, leaf, err = gwDial(gw.addr, tt.sni)
					return err
				})
				if greeting != tt.want.name {
					t.Fatalf("SNI %q reached %q, want %q", tt.sni, greeting, tt.want.name)
				}
				if leaf != tt.want.leaf {
					t.Fatalf("SNI %q: the client saw a certificate other than %s's", tt.sni, tt.want.name)
				}
			}
			if _, _, err := gwDial(gw.addr, "nobody.example.com"); err == nil {
				t.Fatal("an unknown server name got through")
			}
			if _, _, err := gwDial(gw.addr, "outbound_.9999_._.a.mesh.local"); err == nil {
				t.Fatal("an Istio name of a port with no cluster got through")
			}
		})
	}
	t.Run("unknown SNI logged", func(t *testing.T) {
		eventually(t, 3*time.Second, func() error {
			if !strings.Contains(p.out.String(), `sni=nobody.example.com`) {
				return errors.New("no log line names the refused server name")
			}
			return nil
		})
	})
}

// hboneClusterYAML is a static cluster tunneled over HBONE to the inbound
// at hboneAddr (identity checked) with one endpoint, target.
func hboneClusterYAML(t *testing.T, name, target, hboneAddr, identity string) string {
	th, tp := splitHostPort(t, target)
	return fmt.Sprintf(`  - name: "%s"
    type: STATIC
    connect_timeout: 2s
    metadata:
      filter_metadata:
        meshlet.hbone: {address: "%s", identity: "%s"}
    load_assignment:
      cluster_name: "%s"
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: %s, port_value: %d}}}
`, name, hboneAddr, identity, name, th, tp)
}

// TestSNIGatewayHBONE: gateways in front of a remote node reached only over
// HBONE. Passthrough carries the client's TLS inside the tunnel, so the
// client still sees the backend's certificate; --gateway-terminate-hbone
// ends the client's mesh mTLS at the gateway (its SPIFFE identity) and
// sends the plaintext through the tunnel.
func TestSNIGatewayHBONE(t *testing.T) {
	ca := newHBCA(t)
	const serverID = "spiffe://cluster.local/ns/default/sa/server"
	const gatewayID = "spiffe://cluster.local/ns/istio-system/sa/gateway"
	hboneAddr := loopAddr(t)
	runHBONEProxy(t, "", append(ca.issue(t, "server", serverID), "--hbone-inbound", hboneAddr)...)
	tlsBE := startGWBackend(t, "tls.mesh.local")
	echo := startTCPEcho(t)
	static := "static_resources:\n  clusters:\n" +
		hboneClusterYAML(t, "outbound|443||tls.mesh.local", tlsBE.addr, hboneAddr, serverID) +
		hboneClusterYAML(t, "outbound|7000||echo.mesh.local", echo, hboneAddr, serverID)
	// The gateway's own identity (not only an HBONE one): terminating needs it.
	idFlags := ca.issue(t, "gateway", gatewayID)
	idFlags[0], idFlags[2], idFlags[4] = "--cert-file", "--key-file", "--roots-file"
	passAddr, termAddr := loopAddr(t), loopAddr(t)
	runHBONEProxy(t, static, append([]string{"--gateway", passAddr}, idFlags...)...)
	runHBONEProxy(t, static, append([]string{"--gateway", termAddr, "--gateway-terminate-hbone"}, idFlags...)...)

	t.Run("passthrough inside the tunnel", func(t *testing.T) {
		greeting, leaf, err := gwDial(passAddr, "outbound_.443_._.tls.mesh.local")
		if err != nil {
			t.Fatal(err)
		}
		if greeting != tlsBE.name || leaf != tlsBE.leaf {
			t.Fatalf("reached %q (own certificate: %v)", greeting, leaf == tlsBE.leaf)
		}
	})
	t.Run("terminate and re-originate", func(t *testing.T) {
		clientFlags := ca.issue(t, "client", "spiffe://cluster.local/ns/default/sa/client")
		cert, err := tls.LoadX509KeyPair(clientFlags[1], clientFlags[3])
		if err != nil {
			t.Fatal(err)
		}
		dial := func(certs []tls.Certificate) (string, string, error) {
			raw, err := net.DialTimeout("tcp", termAddr, 2*time.Second)
			if err != nil {
				return "", "", err
			}
			defer raw.Close()
			_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
			tc := tls.Client(raw, &tls.Config{ServerName: "outbound_.7000_._.echo.mesh.local", Certificates: certs, InsecureSkipVerify: true})
			if err := tc.Handshake(); err != nil {
				return "", "", err
			}
			peer := ""
			if uris := tc.ConnectionState().PeerCertificates[0].URIs; len(uris) > 0 {
				peer = uris[0].String()
			}
			if _, err := tc.Write([]byte("through the gateway")); err != nil {
				return peer, "", err
			}
			buf := make([]byte, len("through the gateway"))
			n, err := io.ReadFull(tc, buf)
			return peer, string(buf[:n]), err
		}
		peer, got, err := dial([]tls.Certificate{cert})
		if err != nil || got != "through the gateway" {
			t.Fatalf("echo = %q, %v", got, err)
		}
		if peer != gatewayID {
			t.Fatalf("client's TLS peer = %q, want the gateway %q", peer, gatewayID)
		}
		if _, got, err := dial(nil); err == nil || got != "" {
			t.Fatalf("a client without a mesh certificate got %q, %v", got, err)
		}
	})
}
