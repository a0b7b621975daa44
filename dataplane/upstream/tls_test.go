package upstream

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

// selfSigned returns a CA-less self-signed server certificate (no SANs) and
// its PEM, so tests see chain verification without any host name.
func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "upstream"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pemCert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pemCert
}

func tlsServer(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() { _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	return lis.Addr().String()
}

func handshake(t *testing.T, cfg *tls.Config, addr string) error {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return tls.Client(c, cfg).Handshake()
}

// TestClientTLSEnvoySemantics: no validation context accepts any
// certificate; trusted_ca verifies the chain without needing SNI; a
// certificate from another CA is refused.
func TestClientTLSEnvoySemantics(t *testing.T) {
	cert, certPEM := selfSigned(t)
	_, otherPEM := selfSigned(t)
	addr := tlsServer(t, cert)
	for _, tc := range []struct {
		name    string
		roots   []byte
		wantErr bool
	}{
		{"no validation context", nil, false},
		{"trusted_ca matches, no sni", certPEM, false},
		{"trusted_ca of another CA", otherPEM, true},
	} {
		cfg, err := clientTLSFor(tc.roots)
		if err != nil {
			t.Fatal(err)
		}
		err = handshake(t, cfg, addr)
		if (err != nil) != tc.wantErr {
			t.Errorf("%s: handshake err %v, want error %v", tc.name, err, tc.wantErr)
		}
	}
}

func clientTLSFor(roots []byte) (*tls.Config, error) {
	return clientTLS(&state.UpstreamTLS{RootCAPEM: roots}, Identity{})
}
