package dataplane

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"net"
	"testing"
	"time"

	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/state"
)

// TestSDSListenerStrict: a TLS-only listener takes its certificate and
// client CA from the proxy identity (agent SDS "default"/"ROOTCA"), admits
// only the client SPIFFE ID its SAN matcher names, and closes and counts
// plaintext (STRICT).
func TestSDSListenerStrict(t *testing.T) {
	ca, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	issue := issuer(t, ca)
	e := newEnv(t, Options{})
	e.clusters.SetIdentity(identity.Static{Cert: issue("server"), Pool: ca.Roots()})
	e.cluster("be", startBackend(t, greet("be:")))
	chain := tcpChain("mtls", "be")
	chain.Match.TransportProtocol = "tls"
	chain.TLS = &state.DownstreamTLS{
		SDS:               state.SDSRef{Certificate: "default", Validation: "ROOTCA", Agent: true},
		RequireClientCert: true,
		SANMatchers:       []state.SANMatcher{{Type: state.SANURI, Match: state.StringMatcher{Value: "spiffe://td/ns/ns/sa/client"}}},
	}
	e.listener(tcpListener("l", chain))
	addr := e.addr("l")

	client := func(sa string) *tls.Config {
		return identity.ClientConfig(identity.Static{Cert: issue(sa), Pool: ca.Roots()}, nil)
	}
	t.Run("allowed client", func(t *testing.T) {
		c := tls.Client(dial(t, addr), client("client"))
		roundTrip(t, c, "hi", "be:hi")
	})
	refused := func(t *testing.T, c net.Conn) {
		t.Helper()
		// A whole request line: the HTTP inspector decides on it.
		_, _ = c.Write([]byte("GET / HTTP/1.1\r\nhost: x\r\n\r\n"))
		_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if n, err := c.Read(make([]byte, 8)); err == nil {
			t.Fatalf("read %d bytes; want the connection refused", n)
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("connection neither served nor closed")
		}
	}
	t.Run("client SAN mismatch", func(t *testing.T) {
		c := tls.Client(dial(t, addr), client("intruder"))
		_ = c.Handshake()
		refused(t, c)
	})
	t.Run("plaintext", func(t *testing.T) {
		refused(t, dial(t, addr))
		// The server counts after its side of the handshake or inspection
		// ends, which may be just after the client saw the close.
		deadline := time.Now().Add(3 * time.Second)
		for {
			st := e.srv.Stats()["l"]
			if st.PlaintextRejected == 1 && st.TLSHandshakeFailed == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("PlaintextRejected = %d, TLSHandshakeFailed = %d; want 1 and 1 (the plaintext client, the SAN mismatch)",
					st.PlaintextRejected, st.TLSHandshakeFailed)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestSDSListenerNoIdentity: without a proxy identity the handshake fails
// rather than serving without a certificate.
func TestSDSListenerNoIdentity(t *testing.T) {
	e := newEnv(t, Options{})
	e.cluster("be", startBackend(t, greet("be:")))
	chain := tcpChain("mtls", "be")
	chain.TLS = &state.DownstreamTLS{SDS: state.SDSRef{Certificate: "default", Validation: "ROOTCA", Agent: true}, RequireClientCert: true}
	e.listener(tcpListener("l", chain))
	c := tls.Client(dial(t, e.addr("l")), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the server must fail first
	if err := c.Handshake(); err == nil {
		t.Fatal("handshake succeeded without any certificate source")
	}
}

// TestSDSListenerMaxVerifyDepth: a client CA delivered as an SDS secret
// over ADS applies the secret's max_verify_depth; a secret update changes
// it for the next handshake.
func TestSDSListenerMaxVerifyDepth(t *testing.T) {
	ca, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	issue := issuer(t, ca)
	e := newEnv(t, Options{})
	e.clusters.SetIdentity(identity.Static{Cert: issue("server"), Pool: ca.Roots()})
	e.cluster("be", startBackend(t, greet("be:")))
	setCA := func(depth uint32) {
		e.store.Update(func(n *state.Snapshot) bool {
			n.Secrets["client-ca"] = &state.Secret{Name: "client-ca", TrustedCAPEM: ca.RootPEM(), MaxVerifyDepth: &depth}
			return true
		})
	}
	chain := tcpChain("mtls", "be")
	chain.Match.TransportProtocol = "tls"
	// The server certificate is inline; the client CA comes from ADS.
	chain.TLS = &state.DownstreamTLS{SDS: state.SDSRef{Validation: "client-ca"}, RequireClientCert: true}
	chain.TLS.CertChainPEM, chain.TLS.KeyPEM = pemPair(t, issue("server"))
	e.listener(tcpListener("l", chain))
	addr := e.addr("l")
	client := identity.ClientConfig(identity.Static{Cert: issue("client"), Pool: ca.Roots()}, nil)

	// The ephemeral CA signs leaves directly: depth 1.
	setCA(0)
	c := tls.Client(dial(t, addr), client)
	_ = c.Handshake()
	_, _ = c.Write([]byte("hi"))
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if n, err := c.Read(make([]byte, 8)); err == nil {
		t.Fatalf("depth 0: read %d bytes; want the client refused", n)
	}
	setCA(1)
	roundTrip(t, tls.Client(dial(t, addr), client), "hi", "be:hi")
}

// pemPair encodes c's chain and key as PEM.
func pemPair(t *testing.T, c *tls.Certificate) (chain, key []byte) {
	t.Helper()
	for _, der := range c.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	k, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return chain, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: k})
}

// issuer returns a function issuing ca's certificates for service
// accounts of td/ns.
func issuer(t *testing.T, ca *identity.CA) func(sa string) *tls.Certificate {
	return func(sa string) *tls.Certificate {
		t.Helper()
		c, err := ca.Issue(identity.ID{TrustDomain: "td", Namespace: "ns", ServiceAccount: sa}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
}
