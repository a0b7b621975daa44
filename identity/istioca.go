package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshlet/meshlet/identity/capb"
)

// ImpersonatedIdentityKey is the request metadata field ztunnel sets when
// it asks for a certificate on behalf of another workload; istiod then
// checks the caller (the node agent) may act for that identity.
const ImpersonatedIdentityKey = "ImpersonatedIdentity"

// IstioCAClient requests workload certificates from Istio's CA API
// (istio.v1.auth.IstioCertificateService/CreateCertificate), as
// pilot-agent and ztunnel do against istiod.
type IstioCAClient struct {
	cert capb.IstioCertificateServiceClient
	// tokenFile holds the bearer token (typically a projected Kubernetes
	// service account token). It is re-read on every request because the
	// kubelet rotates it.
	tokenFile string
}

// NewIstioCAClient returns a client over conn (the caller owns and closes
// it; it should be TLS towards a real istiod). tokenFile may be empty for
// a CA that needs no token.
func NewIstioCAClient(conn grpc.ClientConnInterface, tokenFile string) *IstioCAClient {
	return &IstioCAClient{cert: capb.NewIstioCertificateServiceClient(conn), tokenFile: tokenFile}
}

// Sign creates a new key, asks the CA to certify it for id for ttl, and
// returns the certificate with the trust bundle (the last certificate of
// the returned chain, Istio's root). impersonate marks the request as made
// on behalf of id by a node agent.
func (c *IstioCAClient) Sign(ctx context.Context, id ID, ttl time.Duration, impersonate bool) (*tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csr, err := NewCSR(key, id)
	if err != nil {
		return nil, nil, err
	}
	req := &capb.IstioCertificateRequest{Csr: string(csr), ValidityDuration: int64(ttl / time.Second)}
	if impersonate {
		req.Metadata = &structpb.Struct{Fields: map[string]*structpb.Value{
			ImpersonatedIdentityKey: structpb.NewStringValue(id.String()),
		}}
	}
	if c.tokenFile != "" {
		tok, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, nil, fmt.Errorf("istio CA: token: %w", err)
		}
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+strings.TrimSpace(string(tok)))
	}
	resp, err := c.cert.CreateCertificate(ctx, req)
	if err != nil {
		return nil, nil, fmt.Errorf("istio CA: CreateCertificate for %s: %w", id, err)
	}
	cert, roots, err := chainFromPEM(resp.GetCertChain(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("istio CA: response for %s: %w", id, err)
	}
	if got, err := FromCert(cert.Leaf); err != nil || got != id {
		return nil, nil, fmt.Errorf("istio CA: issued certificate is for %v (%v), asked for %s", got, err, id)
	}
	return cert, roots, nil
}

// Source returns a Rotating source for id backed by this client.
func (c *IstioCAClient) Source(ctx context.Context, id ID, ttl time.Duration, impersonate bool, opts RotationOptions) (*Rotating, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	if opts.Name == "" {
		opts.Name = id.String()
	}
	return NewRotating(ctx, func(ctx context.Context) (*tls.Certificate, *x509.CertPool, error) {
		return c.Sign(ctx, id, ttl, impersonate)
	}, opts)
}

// chainFromPEM turns Istio's cert_chain (leaf first, root last, each
// entry one or more PEM blocks) into a certificate for key and a pool with
// the root. The root is not sent in handshakes.
func chainFromPEM(entries []string, key crypto.Signer) (*tls.Certificate, *x509.CertPool, error) {
	var ders [][]byte
	for i, e := range entries {
		rest := []byte(e)
		n := 0
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			if b.Type == "CERTIFICATE" {
				ders = append(ders, b.Bytes)
				n++
			}
		}
		if n == 0 {
			return nil, nil, fmt.Errorf("cert_chain[%d]: no PEM certificate", i)
		}
	}
	if len(ders) < 2 {
		return nil, nil, errors.New("cert_chain: want the leaf and at least the root")
	}
	certs := make([]*x509.Certificate, len(ders))
	for i, d := range ders {
		c, err := x509.ParseCertificate(d)
		if err != nil {
			return nil, nil, fmt.Errorf("cert_chain certificate %d: %w", i, err)
		}
		certs[i] = c
	}
	root := certs[len(certs)-1]
	roots := x509.NewCertPool()
	roots.AddCert(root)
	inter := x509.NewCertPool()
	for _, c := range certs[1 : len(certs)-1] {
		inter.AddCert(c)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, nil, fmt.Errorf("cert_chain does not verify: %w", err)
	}
	if !publicKeyEqual(certs[0].PublicKey, key.Public()) {
		return nil, nil, errors.New("leaf certificate is not for the requested key")
	}
	return &tls.Certificate{Certificate: ders[:len(ders)-1], PrivateKey: key, Leaf: certs[0]}, roots, nil
}

func publicKeyEqual(a, b crypto.PublicKey) bool {
	ak, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ak.Equal(b)
}

// NewCSR returns a PEM certificate signing request for key whose only SAN
// is id's URI.
func NewCSR(key crypto.Signer, id ID) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{id.URL()}}, key)
	if err != nil {
		return nil, fmt.Errorf("csr for %s: %w", id, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}
