package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/meshlet/meshlet/identity"
)

const (
	mtlsServerID = "spiffe://cluster.local/ns/default/sa/server"
	mtlsClientID = "spiffe://cluster.local/ns/default/sa/client"
)

// runMTLSProxy runs the binary with a bootstrap, extra environment and
// flags, and waits for /ready.
func runMTLSProxy(t *testing.T, staticResources string, env []string, args ...string) {
	t.Helper()
	adminPort := freePort(t)
	boot := fmt.Sprintf("node: {id: sidecar~127.0.0.1~mtls.default~default.svc.cluster.local, cluster: test}\nadmin:\n  address: {socket_address: {address: 127.0.0.1, port_value: %d}}\n%s", adminPort, staticResources)
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(boot), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &lockedBuf{}
	cmd := exec.Command(binPath, append([]string{"run", "--bootstrap", path, "--drain-time", "1s"}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("ztunnel %v output:\n%s", args, out.String())
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			t.Fatalf("ztunnel exited before ready:\n%s", out.String())
		default:
		}
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/ready", adminPort)); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("ztunnel not ready:\n%s", out.String())
}

// agentSDS is an SDS secret config served by the local agent (Istio's
// sds-grpc cluster), which the proxy resolves to its own identity.
func agentSDS(name string) string {
	return fmt.Sprintf(`{name: %s, sds_config: {resource_api_version: V3, api_config_source: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}}}`, name)
}

// serverChain is an inbound filter chain terminating mTLS with the proxy's
// identity, requiring a client certificate whose URI SAN is clientID, and
// proxying TCP to cluster.
func serverChain(clientID, cluster string) string {
	return fmt.Sprintf(`    - filter_chain_match: {transport_protocol: tls}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_params: {tls_minimum_protocol_version: TLSv1_2}
            tls_certificate_sds_secret_configs: [%s]
            combined_validation_context:
              default_validation_context:
                match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "%s"}}]
              validation_context_sds_secret_config: %s
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: in, cluster: %s}
`, agentSDS("default"), clientID, agentSDS("ROOTCA"), cluster)
}

func plainChain(cluster string) string {
	return fmt.Sprintf(`    - filter_chain_match: {transport_protocol: raw_buffer}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: in, cluster: %s}
`, cluster)
}

func listenerYAML(name, addr, chains string) string {
	h, p, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`  - name: %s
    address: {socket_address: {address: %s, port_value: %s}}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
    filter_chains:
%s`, name, h, p, chains)
}

func staticCluster(name, addr, transportSocket string) string {
	h, p, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`  - name: %s
    type: STATIC
    connect_timeout: 2s
%s    load_assignment:
      cluster_name: %s
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: %s, port_value: %s}}}
`, name, transportSocket, name, h, p)
}

// meshTLS is an UpstreamTlsContext with the proxy's identity expecting
// serverID (a URI SAN; the deprecated form when legacy is set).
func meshTLS(serverID string, legacy bool) string {
	san := fmt.Sprintf(`match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "%s"}}]`, serverID)
	if legacy {
		san = fmt.Sprintf(`match_subject_alt_names: [{exact: "%s"}]`, serverID)
	}
	return fmt.Sprintf(`    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.80_._.server.default.svc.cluster.local
        common_tls_context:
          alpn_protocols: [istio-peer-exchange, istio]
          tls_certificate_sds_secret_configs: [%s]
          combined_validation_context:
            default_validation_context: {%s}
            validation_context_sds_secret_config: %s
`, agentSDS("default"), san, agentSDS("ROOTCA"))
}

func plainListener(name, addr, cluster string) string {
	h, p, _ := net.SplitHostPort(addr)
	return fmt.Sprintf(`  - name: %s
    address: {socket_address: {address: %s, port_value: %s}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: out, cluster: %s}
`, name, h, p, cluster)
}

func loopAddr(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", freePort(t)) }

// fetch makes one request on a new connection (so each one handshakes).
func fetch(addr string) (string, error) {
	c := &http.Client{Timeout: 3 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/x")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	return string(b), nil
}

// mtlsPair starts a server proxy with a STRICT and a PERMISSIVE inbound to
// one backend, and a client proxy whose outbound listeners reach them over
// mTLS. idArgs gives each proxy its identity flags (and env).
type mtlsPair struct {
	backend                        *backend
	strict, permissive             string // server proxy inbound addresses
	viaStrict, viaPermissive       string // client proxy outbound, mTLS
	viaLegacySAN, viaWrongSAN      string
	viaPlainToStrict, viaPlainToPm string // client proxy outbound, plaintext
}

func startMTLSPair(t *testing.T, serverArgs, clientArgs []string, serverEnv, clientEnv []string) *mtlsPair {
	t.Helper()
	p := &mtlsPair{backend: startBackend(t, "backend")}
	p.strict, p.permissive = loopAddr(t), loopAddr(t)
	server := "static_resources:\n  listeners:\n" +
		listenerYAML("strict", p.strict, serverChain(mtlsClientID, "backend")) +
		listenerYAML("permissive", p.permissive, serverChain(mtlsClientID, "backend")+plainChain("backend")) +
		"  clusters:\n" + staticCluster("backend", p.backend.addr, "")
	runMTLSProxy(t, server, append([]string{"SERVICE_ACCOUNT=server"}, serverEnv...), serverArgs...)

	p.viaStrict, p.viaPermissive, p.viaLegacySAN, p.viaWrongSAN = loopAddr(t), loopAddr(t), loopAddr(t), loopAddr(t)
	p.viaPlainToStrict, p.viaPlainToPm = loopAddr(t), loopAddr(t)
	client := "static_resources:\n  listeners:\n" +
		plainListener("to-strict", p.viaStrict, "strict") +
		plainListener("to-permissive", p.viaPermissive, "permissive") +
		plainListener("legacy-san", p.viaLegacySAN, "legacy") +
		plainListener("wrong-san", p.viaWrongSAN, "wrong") +
		plainListener("plain-strict", p.viaPlainToStrict, "plain-strict") +
		plainListener("plain-permissive", p.viaPlainToPm, "plain-permissive") +
		"  clusters:\n" +
		staticCluster("strict", p.strict, meshTLS(mtlsServerID, false)) +
		staticCluster("permissive", p.permissive, meshTLS(mtlsServerID, false)) +
		staticCluster("legacy", p.strict, meshTLS(mtlsServerID, true)) +
		staticCluster("wrong", p.strict, meshTLS("spiffe://cluster.local/ns/default/sa/other", false)) +
		staticCluster("plain-strict", p.strict, "") +
		staticCluster("plain-permissive", p.permissive, "")
	runMTLSProxy(t, client, append([]string{"SERVICE_ACCOUNT=client"}, clientEnv...), clientArgs...)
	return p
}

// checkModes asserts STRICT/PERMISSIVE behaviour and SAN checks.
func (p *mtlsPair) checkModes(t *testing.T) {
	t.Helper()
	for _, tc := range []struct {
		name, addr string
		ok         bool
	}{
		{"mtls to strict", p.viaStrict, true},
		{"mtls to permissive", p.viaPermissive, true},
		{"deprecated match_subject_alt_names", p.viaLegacySAN, true},
		{"server SAN mismatch", p.viaWrongSAN, false},
		{"plaintext to strict (via proxy)", p.viaPlainToStrict, false},
		{"plaintext to strict (direct)", p.strict, false},
		{"plaintext to permissive (via proxy)", p.viaPlainToPm, true},
		{"plaintext to permissive (direct)", p.permissive, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := fetch(tc.addr)
			if tc.ok && (err != nil || !strings.HasPrefix(body, "backend ")) {
				t.Fatalf("got %q, %v; want the backend's answer", body, err)
			}
			if !tc.ok && err == nil {
				t.Fatalf("got %q; want the connection refused", body)
			}
		})
	}
}

// TestMTLSBuiltinCA: two proxies sharing --ca-dir issue their own SPIFFE
// certificates and talk mTLS with SDS "default"/"ROOTCA" from the agent.
func TestMTLSBuiltinCA(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	p := startMTLSPair(t, []string{"--ca-dir", caDir}, []string{"--ca-dir", caDir}, nil, nil)
	p.checkModes(t)

	// A client whose certificate chains to another root is refused.
	addr := loopAddr(t)
	other := "static_resources:\n  listeners:\n" + plainListener("o", addr, "strict") +
		"  clusters:\n" + staticCluster("strict", p.strict, meshTLS(mtlsServerID, false))
	runMTLSProxy(t, other, []string{"SERVICE_ACCOUNT=client"}, "--ca-dir", filepath.Join(t.TempDir(), "other-ca"))
	if body, err := fetch(addr); err == nil {
		t.Fatalf("client from another CA got %q; want refused", body)
	}
}

// TestMTLSIstioCA: both proxies get their certificates from Istio's CA API
// (an in-process IstioCertificateService) with a bearer token file.
func TestMTLSIstioCA(t *testing.T) {
	ca, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	var issued atomic.Int64
	srv := &identity.CAServer{
		CA: ca,
		Authenticate: func(_ context.Context, tok string) (identity.ID, error) {
			// The token names the service account it proves.
			sa, ok := strings.CutPrefix(tok, "token-for-")
			if !ok {
				return identity.ID{}, errors.New("unknown token")
			}
			issued.Add(1)
			return identity.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: sa}, nil
		},
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	dir := t.TempDir()
	token := func(sa string) string {
		path := filepath.Join(dir, sa+".token")
		if err := os.WriteFile(path, []byte("token-for-"+sa), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	p := startMTLSPair(t,
		[]string{"--ca-token-file", token("server")}, []string{"--ca-token-file", token("client")},
		[]string{"CA_ADDRESS=" + lis.Addr().String()}, []string{"CA_ADDRESS=" + lis.Addr().String()})
	p.checkModes(t)
	if n := issued.Load(); n < 2 {
		t.Errorf("CA issued %d certificates, want one per proxy at least", n)
	}
}

// TestMTLSRotationUnderLoad: certificates living 2s rotate several times
// while 200 requests per second, each on a new mTLS connection, all
// succeed.
func TestMTLSRotationUnderLoad(t *testing.T) {
	caDir := filepath.Join(t.TempDir(), "ca")
	args := []string{"--ca-dir", caDir, "--cert-lifetime", "2s", "--rotation-fraction", "0.5"}
	p := startMTLSPair(t, args, args, nil, nil)
	const rps, dur = 200, 5 * time.Second
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / rps)
	defer tick.Stop()
	end := time.Now().Add(dur)
	for time.Now().Before(end) {
		<-tick.C
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := fetch(p.viaStrict); err != nil {
				failed.Add(1)
				firstErr.CompareAndSwap(nil, err)
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d of %d requests failed during rotation; first: %v", failed.Load(), ok.Load()+failed.Load(), firstErr.Load())
	}
	// 5s of 2s certificates: without rotation the later handshakes would
	// have presented expired certificates and failed.
	if ok.Load() < rps*4 {
		t.Fatalf("only %d requests completed in %v", ok.Load(), dur)
	}
}

// TestSystemRootCerts (gRFC A82): a cluster with system_root_certs reaches
// a TLS backend whose certificate chains to a root in SSL_CERT_FILE, and
// refuses it when the OS store does not hold that root.
func TestSystemRootCerts(t *testing.T) {
	root, rootKey, rootPEM := testRoot(t, "public-root")
	_, _, otherPEM := testRoot(t, "other-root")
	backendAddr := tlsBackend(t, root, rootKey, "ingress.example.com")
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.pem"), filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(good, rootPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, otherPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	ts := `    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: ingress.example.com
        common_tls_context:
          validation_context:
            system_root_certs: {}
            match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: "%s"}}]
`
	for _, tc := range []struct {
		name, certFile, san string
		ok                  bool
	}{
		{"root in the OS store, name under the wildcard SAN", good, "ingress.example.com", true},
		{"wildcard covers one label only", good, "a.b.example.com", false},
		{"root not in the OS store", bad, "ingress.example.com", false},
		{"name mismatch", good, "ingress.example.org", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			listen := loopAddr(t)
			res := "static_resources:\n  listeners:\n" + plainListener("out", listen, "public") +
				"  clusters:\n" + staticCluster("public", backendAddr, fmt.Sprintf(ts, tc.san))
			// An empty SSL_CERT_DIR keeps the host's store out of the test.
			runMTLSProxy(t, res, []string{"SSL_CERT_FILE=" + tc.certFile, "SSL_CERT_DIR=" + t.TempDir()})
			body, err := fetch(listen)
			if tc.ok && (err != nil || body != "public ok") {
				t.Fatalf("got %q, %v; want the public backend", body, err)
			}
			if !tc.ok && err == nil {
				t.Fatalf("got %q; want refused", body)
			}
		})
	}
}

func testRoot(t *testing.T, cn string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// tlsBackend serves "public ok" over TLS with a certificate for dnsName
// signed by root.
func tlsBackend(t *testing.T, root *x509.Certificate, rootKey *ecdsa.PrivateKey, dnsName string) string {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(8), Subject: pkix.Name{CommonName: dnsName}, DNSNames: []string{"*.example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, root, &key.PublicKey, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "public ok") })}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().String()
}
