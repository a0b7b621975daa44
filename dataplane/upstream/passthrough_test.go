package upstream

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

// TestDialPassthrough: a cluster with an upstream TLS context gets TLS from
// Dial but raw bytes from DialPassthrough, so a client's own handshake can
// pass through to the host; connect_timeout still applies.
func TestDialPassthrough(t *testing.T) {
	cert, pemCert := selfSigned(t)
	addr := tlsServer(t, cert)
	store := state.NewStore()
	m := NewManager(store, nil)
	defer m.Close()
	store.Update(func(s *state.Snapshot) bool {
		s.Clusters["tls"] = &state.Cluster{Name: "tls", ConnectTimeout: time.Second,
			TLS: &state.UpstreamTLS{RootCAPEM: pemCert}, LoadAssignment: cla("tls", addr)}
		s.Clusters["dead"] = &state.Cluster{Name: "dead", ConnectTimeout: 200 * time.Millisecond,
			LoadAssignment: cla("dead", "192.0.2.1:9")}
		return true
	})
	c := m.Cluster("tls")
	h, err := c.Pick(&lb.PickInfo{})
	if err != nil {
		t.Fatal(err)
	}
	viaDial, err := c.Dial(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	viaDial.Close()
	if _, ok := viaDial.(*tls.Conn); !ok {
		t.Fatalf("Dial returned %T, want the cluster's TLS", viaDial)
	}
	raw, err := c.DialPassthrough(context.Background(), h)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, ok := raw.(*net.TCPConn); !ok {
		t.Fatalf("DialPassthrough returned %T, want a plain TCP connection", raw)
	}
	// The caller's own handshake works over it, with the host's certificate.
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("client handshake over the passthrough connection: %v", err)
	}
	if got := tc.ConnectionState().PeerCertificates[0].Raw; string(got) != string(cert.Certificate[0]) {
		t.Fatal("passthrough connection reached a different certificate")
	}

	dead := m.Cluster("dead")
	h, _ = dead.Pick(&lb.PickInfo{})
	start := time.Now()
	if conn, err := dead.DialPassthrough(context.Background(), h); err == nil {
		conn.Close()
		t.Fatal("dial to TEST-NET-1 succeeded")
	}
	if el := time.Since(start); el > time.Second {
		t.Fatalf("DialPassthrough took %v with connect_timeout 200ms", el)
	}
}
