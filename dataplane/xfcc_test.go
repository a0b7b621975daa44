package dataplane

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"math/big"
	"net/url"
	"slices"
	"testing"
	"time"
)

func uriCert(t *testing.T, uris ...string) *tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	for _, u := range uris {
		pu, _ := url.Parse(u)
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	// No Leaf: get must parse the DER itself.
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TestLocalURIs: the XFCC "By" values come from the certificate the chain
// presents, static or from GetCertificate (SDS), and follow a rotation.
func TestLocalURIs(t *testing.T) {
	a := uriCert(t, "spiffe://td/ns/default/sa/server")
	b := uriCert(t, "spiffe://td/ns/default/sa/server2", "spiffe://td/extra")
	none := uriCert(t)

	var static localURIs
	if got := static.get(&tls.Config{Certificates: []tls.Certificate{*a}}); !slices.Equal(got, []string{"spiffe://td/ns/default/sa/server"}) {
		t.Errorf("static: %q", got)
	}

	cur := a
	sds := &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return cur, nil }}
	var dyn localURIs
	for _, step := range []struct {
		cert *tls.Certificate
		want []string
	}{
		{a, []string{"spiffe://td/ns/default/sa/server"}},
		{a, []string{"spiffe://td/ns/default/sa/server"}},
		{b, []string{"spiffe://td/ns/default/sa/server2", "spiffe://td/extra"}},
		{none, nil},
	} {
		cur = step.cert
		if got := dyn.get(sds); !slices.Equal(got, step.want) {
			t.Errorf("sds: %q, want %q", got, step.want)
		}
	}
	var empty localURIs
	if got := empty.get(&tls.Config{}); got != nil {
		t.Errorf("no certificate: %q", got)
	}
}
