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
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a certificate authority made in the test: a root, or an
// intermediate signed by its parent.
type testCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	parent *testCA
}

var serial atomic.Int64

func newCert(t *testing.T, tmpl *x509.Certificate, parent *testCA) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(serial.Add(1))
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(time.Hour)
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func newRootCA(t *testing.T) *testCA {
	c, k := newCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "root"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, nil)
	return &testCA{cert: c, key: k}
}

func (ca *testCA) intermediate(t *testing.T) *testCA {
	c, k := newCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "intermediate"}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, ca)
	return &testCA{cert: c, key: k, parent: ca}
}

func (ca *testCA) pem() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})
}

// leaf issues a server certificate for dns, served with every
// intermediate up to (not including) the root.
func (ca *testCA) leaf(t *testing.T, dns ...string) tls.Certificate {
	c, k := newCert(t, &x509.Certificate{Subject: pkix.Name{CommonName: "leaf"}, DNSNames: dns,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}, ca)
	chain := [][]byte{c.Raw}
	for p := ca; p.parent != nil; p = p.parent {
		chain = append(chain, p.cert.Raw)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: k, Leaf: c}
}

// sniServer is a TLS server that records the server name of each
// handshake.
type sniServer struct {
	addr string
	mu   sync.Mutex
	snis []string
}

func newSNIServer(t *testing.T, cert tls.Certificate) *sniServer {
	t.Helper()
	s := &sniServer{}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		s.mu.Lock()
		s.snis = append(s.snis, h.ServerName)
		s.mu.Unlock()
		return nil, nil
	}}
	s.addr = tlsServerConfig(t, cfg)
	return s
}

func (s *sniServer) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.snis...)
}

func tlsServerConfig(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { lis.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); _ = c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	return lis.Addr().String()
}
