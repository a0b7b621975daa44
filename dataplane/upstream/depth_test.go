package upstream

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// TestMaxVerifyDepth: a leaf -> intermediate -> root chain has depth 2 as
// Envoy counts it (the leaf excluded, the trust anchor included).
func TestMaxVerifyDepth(t *testing.T) {
	root := newRootCA(t)
	addr := tlsServer(t, root.intermediate(t).leaf(t, "a.example"))
	u32 := func(v uint32) *uint32 { return &v }
	for _, tc := range []struct {
		depth   *uint32
		wantErr bool
	}{
		{nil, false},
		{u32(0), true},
		{u32(1), true},
		{u32(2), false},
		{u32(9), false},
	} {
		cfg, err := clientTLS(&state.UpstreamTLS{RootCAPEM: root.pem(), Params: state.TLSParams{MaxVerifyDepth: tc.depth}}, Identity{})
		if err != nil {
			t.Fatal(err)
		}
		err = handshake(t, cfg, addr)
		if (err != nil) != tc.wantErr || err != nil && !strings.Contains(err.Error(), "max_verify_depth") {
			d := "unset"
			if tc.depth != nil {
				d = fmt.Sprint(*tc.depth)
			}
			t.Errorf("depth %s: handshake err %v, want error %v", d, err, tc.wantErr)
		}
	}
}

// TestECDHCurves: ecdh_curves restrict the key exchanges offered.
func TestECDHCurves(t *testing.T) {
	root := newRootCA(t)
	addr := tlsServerConfig(t, &tls.Config{Certificates: []tls.Certificate{root.leaf(t, "a.example")}, CurvePreferences: []tls.CurveID{tls.CurveP384}})
	for _, tc := range []struct {
		curves  []tls.CurveID
		wantErr bool
	}{
		{nil, false},
		{[]tls.CurveID{tls.CurveP384}, false},
		{[]tls.CurveID{tls.X25519, tls.CurveP256}, true},
	} {
		cfg, err := clientTLS(&state.UpstreamTLS{Params: state.TLSParams{Curves: tc.curves}}, Identity{})
		if err != nil {
			t.Fatal(err)
		}
		if err := handshake(t, cfg, addr); (err != nil) != tc.wantErr {
			t.Errorf("curves %v: handshake err %v, want error %v", tc.curves, err, tc.wantErr)
		}
	}
}

// TestPeerCheckMaxDepthClient: the listener side's PeerCheck (client
// certificates) applies the same count.
func TestPeerCheckMaxDepthClient(t *testing.T) {
	root := newRootCA(t)
	leaf := root.intermediate(t).leaf(t)
	var peers []*x509.Certificate
	for _, der := range leaf.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		peers = append(peers, c)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root.cert)
	for _, tc := range []struct {
		depth   uint32
		wantErr bool
	}{{0, true}, {1, true}, {2, false}} {
		check := &PeerCheck{Roots: func() (*x509.CertPool, error) { return pool, nil }, Usage: x509.ExtKeyUsageClientAuth, MaxDepth: &tc.depth}
		if err := check.Verify(tls.ConnectionState{PeerCertificates: peers}); (err != nil) != tc.wantErr {
			t.Errorf("depth %d: %v, want error %v", tc.depth, err, tc.wantErr)
		}
	}
}
