package dataplane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/state"
)

func TestParseIstioSNI(t *testing.T) {
	tests := []struct {
		sni     string
		ok      bool
		cluster string
	}{
		{"outbound_.8080_._.reviews.default.svc.cluster.local", true, "outbound|8080||reviews.default.svc.cluster.local"},
		{"outbound_.9080_.v2_.reviews.default.svc.cluster.local", true, "outbound|9080|v2|reviews.default.svc.cluster.local"},
		{"outbound_.443_._.a", true, "outbound|443||a"},
		{"inbound_.8080_._.reviews", false, ""},
		{"outbound_.0_._.a", false, ""},
		{"outbound_.080_._.a", false, ""},
		{"outbound_.70000_._.a", false, ""},
		{"outbound_.x_._.a", false, ""},
		{"outbound_.8080_._.", false, ""},
		{"outbound_.8080", false, ""},
		{"outbound_.8080_.v1", false, ""},
		{"reviews.default.svc", false, ""},
		{"", false, ""},
	}
	for _, tt := range tests {
		got, ok := parseIstioSNI(tt.sni)
		if ok != tt.ok {
			t.Errorf("parseIstioSNI(%q) ok = %v, want %v", tt.sni, ok, tt.ok)
			continue
		}
		if ok && got.clusterName() != tt.cluster {
			t.Errorf("parseIstioSNI(%q) cluster = %q, want %q", tt.sni, got.clusterName(), tt.cluster)
		}
	}
}

func TestRouteSNI(t *testing.T) {
	snap := state.Empty()
	for _, name := range []string{
		"outbound|8443||a.example",
		"outbound|8443|v1|a.example",
		"outbound_.9443_._.dnat.example", // Istio's sni-dnat cluster naming
		"plain.example",
		"wild",
		"deep",
	} {
		snap.Clusters[name] = &state.Cluster{Name: name}
	}
	hosts := map[string]string{
		"mapped.example":   "plain.example",
		"*.example.org":    "wild",
		"*.a.example.org":  "deep",
		"missing.example":  "not-there",
		"outbound.example": "wild",
	}
	tests := []struct {
		sni, cluster, how string
	}{
		{"outbound_.8443_._.a.example", "outbound|8443||a.example", "istio"},
		{"outbound_.8443_.v1_.a.example", "outbound|8443|v1|a.example", "istio"},
		{"outbound_.8443_.v2_.a.example", "", ""}, // subset has no cluster
		{"outbound_.9443_._.dnat.example", "outbound_.9443_._.dnat.example", "istio-sni-dnat"},
		{"plain.example", "plain.example", "cluster"},
		{"mapped.example", "plain.example", "host"},
		{"x.example.org", "wild", "host"},
		{"x.a.example.org", "deep", "host"},
		{"example.org", "", ""}, // a wildcard does not match its own parent
		{"missing.example", "not-there", "host"},
		{"unknown.example", "", ""},
		{"", "", ""},
	}
	for _, tt := range tests {
		got, ok := routeSNI(tt.sni, snap, hosts)
		if ok != (tt.cluster != "") || got.cluster != tt.cluster || got.how != tt.how {
			t.Errorf("routeSNI(%q) = %+v, %v; want cluster %q how %q", tt.sni, got, ok, tt.cluster, tt.how)
		}
	}
}

// gatewayDial connects through the gateway with SNI name, verifying the
// server against pool, and returns the TLS conn and the greeting.
func gatewayDial(t *testing.T, addr, name string, cfg *tls.Config) (*tls.Conn, string, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	cfg = cfg.Clone()
	cfg.ServerName = name
	tc := tls.Client(raw, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, "", err
	}
	// The backends greet with "TAG:SNI:ALPN\n" (tlsBackend) or a bare
	// tag (greet); the tag is the first byte.
	buf := make([]byte, 1)
	if _, err := io.ReadFull(tc, buf); err != nil {
		return nil, "", err
	}
	if buf[0] != 'P' {
		line := make([]byte, 0, 64)
		for b := make([]byte, 1); ; {
			if _, err := io.ReadFull(tc, b); err != nil {
				return nil, "", err
			}
			if b[0] == '\n' {
				break
			}
			line = append(line, b[0])
		}
		if want := ":" + name + ":"; string(line) != want {
			return nil, "", fmt.Errorf("backend saw %q, want %q: the ClientHello was changed", line, want)
		}
	}
	return tc, string(buf), nil
}

func startGateway(t *testing.T, e *env, opts GatewayOptions) *Gateway {
	t.Helper()
	opts.Addr = "127.0.0.1:0"
	g, err := e.srv.StartGateway(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := g.Close(ctx); err != nil {
			t.Errorf("gateway Close: %v", err)
		}
	})
	return g
}

// TestGatewayPassthrough: each server name reaches its own backend, whose
// certificate (not one of the gateway's) completes the client's handshake;
// names nobody claims and non-TLS bytes are refused and counted.
func TestGatewayPassthrough(t *testing.T) {
	e := newEnv(t, Options{})
	certA, certB := newCert(t, "a.example"), newCert(t, "b.example")
	e.cluster("outbound|8443||a.example", tlsBackend(t, "A", certA))
	e.cluster("b-cluster", tlsBackend(t, "B", certB))
	g := startGateway(t, e, GatewayOptions{Hosts: map[string]string{"B.example": "b-cluster"}})
	addr := g.Addr().String()

	pool := certA.pool.Clone()
	pool.AppendCertsFromPEM(certB.certPEM)
	tests := []struct {
		sni, verifyName, want string
		cert                  *testCert
	}{
		{"outbound_.8443_._.a.example", "a.example", "A", certA},
		{"b.example", "b.example", "B", certB},
	}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			cfg := &tls.Config{RootCAs: pool}
			// The Istio form is a routing key, not the certificate's name.
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				_, err := cs.PeerCertificates[0].Verify(x509VerifyOpts(pool, tt.verifyName))
				return err
			}
			cfg.InsecureSkipVerify = true
			tc, greet, err := gatewayDial(t, addr, tt.sni, cfg)
			if err != nil {
				t.Fatal(err)
			}
			if greet != tt.want {
				t.Fatalf("reached backend %q, want %q", greet, tt.want)
			}
			leaf := tc.ConnectionState().PeerCertificates[0]
			want, _ := tls.X509KeyPair(tt.cert.certPEM, tt.cert.keyPEM)
			if sha256.Sum256(leaf.Raw) != sha256.Sum256(want.Certificate[0]) {
				t.Fatal("the client saw a different certificate than the backend's")
			}
			roundTrip(t, tc, "ping", "ping")
		})
	}

	t.Run("unknown SNI", func(t *testing.T) {
		_, _, err := gatewayDial(t, addr, "nobody.example", &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			t.Fatal("handshake through the gateway succeeded for an unknown name")
		}
		if got := g.Stats().UnknownSNI; got != 1 {
			t.Fatalf("UnknownSNI = %d, want 1", got)
		}
	})
	t.Run("plaintext", func(t *testing.T) {
		c := dial(t, addr)
		if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		expectClosed(t, c, 2*time.Second)
		if got := g.Stats().NotTLS; got != 1 {
			t.Fatalf("NotTLS = %d, want 1", got)
		}
	})
	t.Run("mapped to a missing cluster", func(t *testing.T) {
		e.store.Update(func(n *state.Snapshot) bool { delete(n.Clusters, "b-cluster"); return true })
		eventually(t, "cluster removed", func() bool { return e.clusters.Cluster("b-cluster") == nil })
		if _, _, err := gatewayDial(t, addr, "b.example", &tls.Config{InsecureSkipVerify: true}); err == nil {
			t.Fatal("handshake succeeded without a cluster")
		}
		if got := g.Stats().NoCluster; got != 1 {
			t.Fatalf("NoCluster = %d, want 1", got)
		}
	})
	eventually(t, "no active gateway connections", func() bool { return g.Stats().Active == 0 })
	if st := g.Stats(); st.Routed != 2 || st.Accepted != 5 {
		t.Fatalf("stats = %+v, want 2 routed of 5 accepted", st)
	}
	// The server's listener stats show the gateway like an xDS SNI
	// listener: refused names and plaintext are filter chain misses.
	name := fmt.Sprintf("gateway_%d", g.Addr().(*net.TCPAddr).Port)
	if ls, ok := e.srv.Stats()[name]; !ok || ls.Accepted != 5 || ls.NoFilterChain != 2 || ls.NoCluster != 1 {
		t.Fatalf("Server.Stats()[%q] = %+v, %v", name, ls, ok)
	}
}

// TestGatewayCloseDrains: Close waits for an open spliced connection and
// closes it when its context ends.
func TestGatewayCloseDrains(t *testing.T) {
	e := newEnv(t, Options{})
	cert := newCert(t, "a.example")
	e.cluster("a.example", tlsBackend(t, "A", cert))
	g, err := e.srv.StartGateway(GatewayOptions{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	tc, greet, err := gatewayDial(t, g.Addr().String(), "a.example", &tls.Config{RootCAs: cert.pool})
	if err != nil || greet != "A" {
		t.Fatalf("dial: %v %q", err, greet)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := g.Close(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Close = %v, want deadline exceeded with a connection open", err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("Close returned after %v without waiting for the open connection", d)
	}
	expectClosed(t, tc, 2*time.Second)
	for name := range e.srv.Stats() {
		t.Fatalf("stats still list %q after Close", name)
	}
	if _, err := net.DialTimeout("tcp", g.Addr().String(), time.Second); err == nil {
		t.Fatal("gateway still accepting after Close")
	}
}

// recordingTunnel stands in for the HBONE client: it records the tunnel
// config and target, then connects to the target directly.
type recordingTunnel struct {
	mu      sync.Mutex
	targets []string
}

func (r *recordingTunnel) DialTunnel(ctx context.Context, _ *state.HBONE, target string) (net.Conn, error) {
	r.mu.Lock()
	r.targets = append(r.targets, target)
	r.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, "tcp", target)
}

func (r *recordingTunnel) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.targets)
}

// TestGatewayHBONE: an HBONE cluster gets the client's TLS inside the
// tunnel untouched by default; with Terminate the gateway ends the mesh
// mTLS (refusing clients without a mesh certificate) and sends plaintext
// through the tunnel.
func TestGatewayHBONE(t *testing.T) {
	ca, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	issue := func(sa string) identity.Source {
		c, err := ca.Issue(identity.ID{TrustDomain: "td", Namespace: "ns", ServiceAccount: sa}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return identity.Static{Cert: c, Pool: ca.Roots()}
	}
	e := newEnv(t, Options{})
	tun := &recordingTunnel{}
	e.clusters.SetTunnel(tun)
	cert := newCert(t, "svc.example")
	tlsBE := tlsBackend(t, "T", cert)
	plainBE := startBackend(t, greet("P"))
	hboneCluster := func(name, addr string) {
		c := &state.Cluster{Name: name, Type: state.ClusterStatic, ConnectTimeout: time.Second,
			HBONE:          &state.HBONE{Port: 15008},
			LoadAssignment: &state.ClusterLoadAssignment{ClusterName: name, Localities: []state.LocalityEndpoints{{Endpoints: []state.Endpoint{{Address: addr, Weight: 1}}}}}}
		e.store.Update(func(n *state.Snapshot) bool { n.Clusters[name] = c; return true })
	}
	hboneCluster("outbound|443||svc.example", tlsBE)
	hboneCluster("outbound|80||plain.example", plainBE)
	eventually(t, "clusters", func() bool { return e.clusters.Cluster("outbound|80||plain.example") != nil })

	t.Run("passthrough inside the tunnel", func(t *testing.T) {
		g := startGateway(t, e, GatewayOptions{})
		tc, greet, err := gatewayDial(t, g.Addr().String(), "outbound_.443_._.svc.example",
			&tls.Config{InsecureSkipVerify: true})
		if err != nil || greet != "T" {
			t.Fatalf("dial: %v %q", err, greet)
		}
		if !bytes.Equal(tc.ConnectionState().PeerCertificates[0].Raw, cert.tls.Certificate[0]) {
			t.Fatal("backend certificate not passed through")
		}
		if tun.count() != 1 {
			t.Fatalf("tunnel dials = %d, want 1", tun.count())
		}
	})
	t.Run("terminate and re-originate", func(t *testing.T) {
		g := startGateway(t, e, GatewayOptions{Terminate: issue("gateway")})
		before := tun.count()
		client := identity.ClientConfig(issue("client"), nil)
		tc, greet, err := gatewayDial(t, g.Addr().String(), "outbound_.80_._.plain.example", client)
		if err != nil || greet != "P" {
			t.Fatalf("dial: %v %q", err, greet)
		}
		id, err := identity.PeerID(tc.ConnectionState())
		if err != nil || id.ServiceAccount != "gateway" {
			t.Fatalf("client saw peer %v (%v), want the gateway's identity", id, err)
		}
		roundTrip(t, tc, "hi", "hi")
		if tun.count() != before+1 {
			t.Fatalf("tunnel dials = %d, want %d", tun.count(), before+1)
		}
		// No client certificate: the mesh mTLS is refused.
		_, _, err = gatewayDial(t, g.Addr().String(), "outbound_.80_._.plain.example", &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			t.Fatal("client without a mesh certificate got through")
		}
		eventually(t, "handshake failure counted", func() bool { return g.Stats().TLSHandshakeFailed == 1 })
		if st := g.Stats(); st.Terminated != 1 {
			t.Fatalf("Terminated = %d, want 1", st.Terminated)
		}
	})
}

func x509VerifyOpts(pool *x509.CertPool, name string) x509.VerifyOptions {
	return x509.VerifyOptions{Roots: pool, DNSName: name}
}

// TestGatewayGlobalLimit: gateway connections count against the data
// plane's MaxConnections like listener connections.
func TestGatewayGlobalLimit(t *testing.T) {
	e := newEnv(t, Options{MaxConnections: 1})
	cert := newCert(t, "a.example")
	e.cluster("a.example", tlsBackend(t, "A", cert))
	g := startGateway(t, e, GatewayOptions{})
	if _, greet, err := gatewayDial(t, g.Addr().String(), "a.example", &tls.Config{RootCAs: cert.pool}); err != nil || greet != "A" {
		t.Fatalf("first connection: %v %q", err, greet)
	}
	if _, _, err := gatewayDial(t, g.Addr().String(), "a.example", &tls.Config{RootCAs: cert.pool}); err == nil {
		t.Fatal("second connection got through with MaxConnections 1")
	}
	if st := g.Stats(); st.GlobalLimited != 1 || st.Routed != 1 {
		t.Fatalf("stats = %+v, want 1 routed and 1 globally limited", st)
	}
}
