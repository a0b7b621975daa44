package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// hbCA writes a mesh root and SPIFFE workload certificates as PEM files.
type hbCA struct {
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newHBCA(t *testing.T) *hbCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Organization: []string{"hbone-test"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &hbCA{dir: t.TempDir(), cert: cert, key: key}
	writePEM(t, filepath.Join(ca.dir, "roots.pem"), "CERTIFICATE", der)
	return ca
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue writes NAME.pem / NAME-key.pem for id and returns the flags that
// give a proxy that identity.
func (ca *hbCA) issue(t *testing.T, name, id string) []string {
	t.Helper()
	u, _ := url.Parse(id)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sn, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: sn, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certPath, keyPath := filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+"-key.pem")
	writePEM(t, certPath, "CERTIFICATE", der)
	writePEM(t, keyPath, "PRIVATE KEY", kder)
	return []string{"--hbone-cert", certPath, "--hbone-key", keyPath, "--hbone-roots", filepath.Join(ca.dir, "roots.pem")}
}

// hboneProc is a running ztunnel started by runHBONEProxy; exited is
// closed when it has exited.
type hboneProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// runHBONEProxy runs the binary with a bootstrap and extra flags and waits
// for /ready. A test may stop it itself; cleanup interrupts it otherwise.
func runHBONEProxy(t *testing.T, staticResources string, args ...string) *hboneProc {
	t.Helper()
	adminPort := freePort(t)
	boot := fmt.Sprintf("node: {id: sidecar~127.0.0.1~hb.default~default.svc.cluster.local, cluster: test}\nadmin:\n  address: {socket_address: {address: 127.0.0.1, port_value: %d}}\n%s", adminPort, staticResources)
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	if err := os.WriteFile(path, []byte(boot), 0o600); err != nil {
		t.Fatal(err)
	}
	out := &lockedBuf{}
	// --drain-time given in args comes later and wins.
	cmd := exec.Command(binPath, append([]string{"run", "--bootstrap", path, "--drain-time", "1s"}, args...)...)
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
				return &hboneProc{cmd: cmd, exited: done}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("ztunnel not ready:\n%s", out.String())
	return nil
}

// tunneledTCP is a static listener on listenAddr proxying TCP to target
// through HBONE at hboneAddr, expecting identity there.
func tunneledTCP(t *testing.T, listenAddr, target, hboneAddr, identity string) string {
	lh, lp := splitHostPort(t, listenAddr)
	th, tp := splitHostPort(t, target)
	return fmt.Sprintf(`static_resources:
  listeners:
  - name: out
    address: {socket_address: {address: %s, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: remote
  clusters:
  - name: remote
    type: STATIC
    connect_timeout: 2s
    metadata:
      filter_metadata:
        meshlet.hbone: {address: "%s", identity: "%s"}
    load_assignment:
      cluster_name: remote
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: %s, port_value: %d}}}
`, lh, lp, hboneAddr, identity, th, tp)
}

// echoOnce sends msg through addr and returns what came back before EOF
// or the deadline.
func echoOnce(addr, msg string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return "", err
	}
	buf := make([]byte, len(msg))
	n, err := io.ReadFull(c, buf)
	return string(buf[:n]), err
}

// TestHBONEProxyPair: client proxy -> HBONE (mTLS, SPIFFE) -> server
// proxy's 15008-style inbound -> local echo; and the ways it must refuse.
func TestHBONEProxyPair(t *testing.T) {
	echo := startTCPEcho(t)
	ca := newHBCA(t)
	const serverID = "spiffe://cluster.local/ns/default/sa/server"
	hboneAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runHBONEProxy(t, "", append(ca.issue(t, "server", serverID), "--hbone-inbound", hboneAddr)...)

	tests := []struct {
		name     string
		clientID string
		expect   string // identity the client proxy requires of the server
		ok       bool
	}{
		{"same trust domain", "spiffe://cluster.local/ns/default/sa/client", serverID, true},
		{"client from another trust domain", "spiffe://evil.example/ns/default/sa/client", serverID, false},
		{"server is not the expected identity", "spiffe://cluster.local/ns/default/sa/client", "spiffe://cluster.local/ns/default/sa/other", false},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			runHBONEProxy(t, tunneledTCP(t, listen, echo, hboneAddr, tt.expect), ca.issue(t, fmt.Sprintf("client%d", i), tt.clientID)...)
			got, err := echoOnce(listen, "through hbone")
			if tt.ok {
				if err != nil || got != "through hbone" {
					t.Fatalf("echo = %q, %v", got, err)
				}
				return
			}
			if err == nil || got != "" {
				t.Fatalf("echo = %q, %v; want the connection closed with no data", got, err)
			}
		})
	}
}

// TestHBONEDrainOnShutdown: on SIGTERM the HBONE server lets an open
// tunnel carry on for the drain time instead of cutting it, takes no new
// tunnel, and the process exits as soon as the last tunnel ended.
func TestHBONEDrainOnShutdown(t *testing.T) {
	echo := startTCPEcho(t)
	ca := newHBCA(t)
	const serverID = "spiffe://cluster.local/ns/default/sa/server"
	hboneAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	srv := runHBONEProxy(t, "", append(ca.issue(t, "server", serverID), "--hbone-inbound", hboneAddr, "--drain-time", "8s")...)
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	runHBONEProxy(t, tunneledTCP(t, listen, echo, hboneAddr, serverID), ca.issue(t, "client", "spiffe://cluster.local/ns/default/sa/client")...)

	c, err := net.DialTimeout("tcp", listen, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	roundTrip := func(msg string) error {
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		buf := make([]byte, len(msg))
		if _, err := io.ReadFull(c, buf); err != nil {
			return err
		}
		if string(buf) != msg {
			return fmt.Errorf("echo %q, want %q", buf, msg)
		}
		return nil
	}
	if err := roundTrip("before"); err != nil {
		t.Fatalf("tunnel before shutdown: %v", err)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// Past the listeners' drain (nothing else is open) the tunnel still
	// carries bytes both ways.
	time.Sleep(1500 * time.Millisecond)
	if err := roundTrip("during drain"); err != nil {
		t.Fatalf("open tunnel cut by shutdown: %v", err)
	}
	// A new tunnel is not taken: the client proxy's connection got GOAWAY
	// and the server accepts no new one.
	if got, err := echoOnce(listen, "new"); err == nil && got == "new" {
		t.Error("a new tunnel was served while the server drains")
	}
	select {
	case <-srv.exited:
		t.Fatal("server exited while a tunnel was open")
	default:
	}
	closed := time.Now()
	c.Close()
	select {
	case <-srv.exited:
		if d := time.Since(closed); d > 4*time.Second {
			t.Errorf("server exited %v after the last tunnel ended, want promptly", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("server did not exit after its last tunnel ended")
	}
}
