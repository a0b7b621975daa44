package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
)

// startZtunnel runs the real binary like startProxy with extra flags and
// metrics off (tests run in parallel).
func startZtunnel(t *testing.T, cp *controlPlane, o proxyOpts, args ...string) *proxy {
	t.Helper()
	o.args = append(append([]string{"--metrics", ""}, args...), o.args...)
	return startProxy(t, cp, o)
}

// adminGet returns the status and body of an admin request.
func adminDo(t *testing.T, p *proxy, method, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+p.admin+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitExit waits for the process to end and returns its exit code.
func (p *proxy) waitExit(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("ztunnel still running after %v", timeout)
		return -1
	}
}

// selfSigned returns a PEM certificate and key for localhost.
func selfSigned(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
}

// indent prefixes every line of s with n spaces (PEM in YAML block scalars).
func indent(s string, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+pad)
}

func TestConfigDumpEnvoyShape(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "v1")
	lAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cp.set(httpListener(t, "web", lAddr, "web-routes"), routeConfig("web-routes", routeTo("svc")),
		edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "svc", be.addr))

	cert, key := selfSigned(t)
	staticPort := freePort(t)
	extra := fmt.Sprintf(`static_resources:
  listeners:
  - name: static-tls
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: static
          cluster: static-backend
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_certificates:
            - certificate_chain:
                inline_string: |
%s
              private_key:
                inline_string: |
%s
  clusters:
  - name: static-backend
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: static-backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %s}}}
`, staticPort, indent(cert, 18), indent(key, 18), be.addr[strings.LastIndex(be.addr, ":")+1:])
	p := startZtunnel(t, cp, proxyOpts{bootstrapExtra: extra})
	eventually(t, 10*time.Second, func() error {
		code, _, _, err := get(h1Client(), "http://"+lAddr+"/", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("pushed listener not serving yet: %d %v", code, err)
		}
		return nil
	})

	code, body := adminDo(t, p, "GET", "/config_dump")
	if code != 200 {
		t.Fatalf("/config_dump = %d: %s", code, body)
	}
	if strings.Contains(body, "PRIVATE KEY") || strings.Contains(body, "BEGIN EC") {
		t.Error("/config_dump shows a private key")
	}
	if !strings.Contains(body, "[redacted]") {
		t.Error("/config_dump has no [redacted] private key")
	}
	var dump adminv3.ConfigDump
	if err := protojson.Unmarshal([]byte(body), &dump); err != nil {
		t.Fatalf("/config_dump is not an envoy.admin.v3.ConfigDump: %v", err)
	}
	var got []string
	for _, a := range dump.GetConfigs() {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatalf("config %s: %v", a.GetTypeUrl(), err)
		}
		switch m := m.(type) {
		case *adminv3.BootstrapConfigDump:
			got = append(got, "bootstrap:"+m.GetBootstrap().GetNode().GetId())
		case *adminv3.ListenersConfigDump:
			for _, l := range m.GetStaticListeners() {
				got = append(got, "static_listener:"+name(t, l.GetListener()))
			}
			for _, l := range m.GetDynamicListeners() {
				got = append(got, "dynamic_listener:"+l.GetName())
			}
		case *adminv3.ClustersConfigDump:
			for _, c := range m.GetStaticClusters() {
				got = append(got, "static_cluster:"+name(t, c.GetCluster()))
			}
			for _, c := range m.GetDynamicActiveClusters() {
				got = append(got, "dynamic_cluster:"+name(t, c.GetCluster()))
			}
		case *adminv3.RoutesConfigDump:
			for _, r := range m.GetDynamicRouteConfigs() {
				got = append(got, "route:"+name(t, r.GetRouteConfig()))
			}
		case *adminv3.EndpointsConfigDump:
			for _, e := range m.GetDynamicEndpointConfigs() {
				got = append(got, "endpoints:"+name(t, e.GetEndpointConfig()))
			}
		}
	}
	want := []string{
		"bootstrap:sidecar~127.0.0.1~test.default~default.svc.cluster.local",
		"static_listener:static-tls", "dynamic_listener:web",
		"static_cluster:static-backend", "dynamic_cluster:svc",
		"route:web-routes", "endpoints:svc",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("config_dump holds\n  %v\nwant (in Envoy's order)\n  %v", got, want)
	}
}

// name reads the name (or cluster_name) field of a packed resource.
func name(t *testing.T, a *anypb.Any) string {
	t.Helper()
	m, err := a.UnmarshalNew()
	if err != nil {
		t.Fatalf("%s: %v", a.GetTypeUrl(), err)
	}
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var fields map[string]any
	if err := json.Unmarshal(b, &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"name", "clusterName"} {
		if s, ok := fields[k].(string); ok {
			return s
		}
	}
	return "?"
}

// servingProxy starts a proxy with one HTTP listener routed to a backend
// and returns the proxy, the listener address and the backend.
func servingProxy(t *testing.T, args ...string) (*proxy, string, *backend) {
	t.Helper()
	cp := startControlPlane(t)
	be := startBackend(t, "v1")
	lAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cp.set(httpListener(t, "web", lAddr, "web-routes"), routeConfig("web-routes", routeTo("svc")),
		edsCluster("svc", clusterv3.Cluster_ROUND_ROBIN, false), endpoints(t, "svc", be.addr))
	p := startZtunnel(t, cp, proxyOpts{}, args...)
	eventually(t, 10*time.Second, func() error {
		code, _, _, err := get(h1Client(), "http://"+lAddr+"/", nil)
		if err != nil || code != 200 {
			return fmt.Errorf("listener not serving yet: %d %v", code, err)
		}
		return nil
	})
	return p, lAddr, be
}

// refused reports whether a new TCP connection to addr is refused.
func refused(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	c.Close()
	return false
}

// slowRequest sends a request the backend answers after d on a
// keep-alive connection, and reports on the returned channel whether it
// succeeded and the proxy asked to close the connection afterwards
// (Connection: close, how HTTP/1 connections are drained).
func slowRequest(addr string, d time.Duration) <-chan error {
	ch := make(chan error, 1)
	go func() {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		req, _ := http.NewRequest("GET", "http://"+addr+"/slow", nil)
		req.Header.Set("x-delay", d.String())
		resp, err := c.Do(req)
		if err != nil {
			ch <- err
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		switch {
		case resp.StatusCode != 200:
			err = fmt.Errorf("in-flight request got %d %q", resp.StatusCode, body)
		case !resp.Close:
			err = fmt.Errorf("in-flight response during drain lacks Connection: close")
		}
		ch <- err
	}()
	return ch
}

func TestDrainListenersLetsInFlightFinish(t *testing.T) {
	p, lAddr, be := servingProxy(t, "--drain-time", "5s")
	hits := be.hits.Load()
	inflight := slowRequest(lAddr, 800*time.Millisecond)
	eventually(t, 5*time.Second, func() error {
		if be.hits.Load() == hits {
			return fmt.Errorf("slow request not at the backend yet")
		}
		return nil
	})
	if code, body := adminDo(t, p, "POST", "/drain_listeners"); code != 200 {
		t.Fatalf("/drain_listeners = %d %s", code, body)
	}
	eventually(t, 2*time.Second, func() error {
		if !refused(lAddr) {
			return fmt.Errorf("listener still accepts after /drain_listeners")
		}
		return nil
	})
	if code, _ := adminDo(t, p, "GET", "/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("/ready = %d while drained, want 503", code)
	}
	if err := <-inflight; err != nil {
		t.Errorf("in-flight request during drain: %v", err)
	}
	// The process keeps running (admin answers) until told to stop.
	if code, _ := adminDo(t, p, "GET", "/server_info"); code != 200 {
		t.Errorf("/server_info after drain = %d", code)
	}
}

func TestSIGTERMFailsReadinessBeforeListenersClose(t *testing.T) {
	const delay = 1500 * time.Millisecond
	p, lAddr, _ := servingProxy(t, "--readiness-delay", delay.String(), "--drain-time", "5s")
	inflight := slowRequest(lAddr, delay+500*time.Millisecond)
	time.Sleep(100 * time.Millisecond)
	sent := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Second, func() error {
		if code, _ := adminDo(t, p, "GET", "/ready"); code != http.StatusServiceUnavailable {
			return fmt.Errorf("/ready = %d after SIGTERM, want 503", code)
		}
		return nil
	})
	notReady := time.Since(sent)
	// Within the readiness delay, new requests are still served.
	if code, _, _, err := get(&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}, "http://"+lAddr+"/", nil); err != nil || code != 200 {
		t.Errorf("request during the readiness delay: %d %v", code, err)
	}
	if notReady >= delay {
		t.Fatalf("/ready failed only after %v, not before the %v delay", notReady, delay)
	}
	// Then the listener stops accepting, the in-flight request finishes
	// and the process exits 0.
	eventually(t, delay+2*time.Second, func() error {
		if !refused(lAddr) {
			return fmt.Errorf("listener still accepts")
		}
		return nil
	})
	if closed := time.Since(sent); closed < delay {
		t.Errorf("listener closed %v after SIGTERM, before the %v readiness delay", closed, delay)
	}
	if err := <-inflight; err != nil {
		t.Errorf("in-flight request: %v", err)
	}
	if code := p.waitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
}

func TestQuitQuitQuitExitsZero(t *testing.T) {
	p, lAddr, _ := servingProxy(t, "--drain-time", "2s")
	if code, _ := adminDo(t, p, "GET", "/quitquitquit"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /quitquitquit = %d, want 405 (POST only)", code)
	}
	if code, body := adminDo(t, p, "POST", "/quitquitquit"); code != 200 {
		t.Fatalf("/quitquitquit = %d %s", code, body)
	}
	if code := p.waitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	if !refused(lAddr) {
		t.Error("listener still accepts after exit")
	}
	if !strings.Contains(p.out.String(), "quitquitquit") {
		t.Errorf("no quitquitquit log line:\n%s", p.out.String())
	}
}

func TestLoggingChangesLevel(t *testing.T) {
	p := startZtunnel(t, nil, proxyOpts{})
	steps := []struct {
		method, path string
		code         int
		body         string
	}{
		{"GET", "/logging", 200, "meshlet: info"},
		{"GET", "/logging?level=debug", http.StatusMethodNotAllowed, "POST"},
		{"POST", "/logging?level=bogus", http.StatusBadRequest, "unknown level"},
		{"POST", "/logging?level=error", 200, "meshlet: error"},
		{"GET", "/logging", 200, "meshlet: error"},
		{"POST", "/logging?level=debug", 200, "meshlet: debug"},
	}
	for _, s := range steps {
		code, body := adminDo(t, p, s.method, s.path)
		if code != s.code || !strings.Contains(body, s.body) {
			t.Errorf("%s %s = %d %q, want %d containing %q", s.method, s.path, code, body, s.code, s.body)
		}
	}
	// The change is real: the process's own "level changed" line is
	// suppressed at error and written at debug.
	// The process writes its log line after answering, and the pipe to
	// the test is read asynchronously: wait for it.
	eventually(t, 5*time.Second, func() error {
		if !strings.Contains(p.out.String(), `msg="log level changed" level=DEBUG`) {
			return fmt.Errorf("no level-changed line at debug yet")
		}
		return nil
	})
	if out := p.out.String(); strings.Contains(out, `msg="log level changed" level=ERROR`) {
		t.Errorf("info line written at level error:\n%s", out)
	}
}

func TestCertsShowsIdentity(t *testing.T) {
	p := startZtunnel(t, nil, proxyOpts{}, "--ca-dir", t.TempDir())
	code, body := adminDo(t, p, "GET", "/certs")
	if code != 200 {
		t.Fatalf("/certs = %d %s", code, body)
	}
	var certs adminv3.Certificates
	if err := protojson.Unmarshal([]byte(body), &certs); err != nil {
		t.Fatalf("/certs is not envoy.admin.v3.Certificates: %v\n%s", err, body)
	}
	chain := certs.GetCertificates()
	if len(chain) != 1 || len(chain[0].GetCertChain()) == 0 {
		t.Fatalf("/certs chain = %s", body)
	}
	leaf := chain[0].GetCertChain()[0]
	if sans := leaf.GetSubjectAltNames(); len(sans) == 0 || sans[0].GetUri() != "spiffe://cluster.local/ns/default/sa/default" {
		t.Errorf("leaf SANs = %v, want the workload's SPIFFE ID", sans)
	}
	if leaf.GetDaysUntilExpiration() == 0 && leaf.GetExpirationTime().AsTime().Before(time.Now()) {
		t.Errorf("leaf already expired: %v", leaf.GetExpirationTime().AsTime())
	}
	// Without an identity the endpoint says so.
	p2 := startZtunnel(t, nil, proxyOpts{})
	if code, _ := adminDo(t, p2, "GET", "/certs"); code != http.StatusNotImplemented {
		t.Errorf("/certs without identity = %d, want 501", code)
	}
}
