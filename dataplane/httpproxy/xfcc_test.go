package httpproxy

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

// xfccCert is a test certificate with its parsed form.
type xfccCert struct {
	tls  tls.Certificate
	leaf *x509.Certificate
}

// newXFCCCert issues a certificate signed by parent (self-signed when nil)
// for the given subject and SANs.
func newXFCCCert(t testing.TB, parent *xfccCert, subject pkix.Name, uris []string, dns []string, isCA bool) *xfccCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      subject,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		DNSNames:     dns,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	if isCA {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	signer, signKey := tmpl, any(key)
	if parent != nil {
		signer, signKey = parent.leaf, parent.tls.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &xfccCert{tls: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, leaf: leaf}
}

func sha256Hex(der []byte) string {
	s := sha256.Sum256(der)
	return hex.EncodeToString(s[:])
}

// pemEscaped is the URL-encoded PEM Envoy puts in Cert and Chain.
func pemEscaped(c *x509.Certificate) string {
	p := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	return strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D").Replace(p)
}

// TestXFCCElement pins the element format: key order, which keys appear
// for which details, quoting of values holding separators, one DNS key per
// DNS SAN, and the URL-encoded PEM of Cert and Chain.
func TestXFCCElement(t *testing.T) {
	ca := newXFCCCert(t, nil, pkix.Name{CommonName: "ca"}, nil, nil, true)
	client := newXFCCCert(t, ca, pkix.Name{CommonName: `Test "Client"`, Organization: []string{"Lyft, Inc"}},
		[]string{"spiffe://td/ns/default/sa/client"}, []string{"a.example.com", "b.example.com"}, false)
	bare := newXFCCCert(t, ca, pkix.Name{}, nil, nil, false)
	hash := sha256Hex(client.leaf.Raw)
	const by = "By=spiffe://td/ns/default/sa/server"
	local := []string{"spiffe://td/ns/default/sa/server"}

	for _, tc := range []struct {
		name    string
		details state.ClientCertDetails
		local   []string
		chain   []*x509.Certificate
		want    string
	}{
		{name: "by and hash only", local: local, chain: []*x509.Certificate{client.leaf},
			want: by + ";Hash=" + hash},
		{name: "no local URI SAN", chain: []*x509.Certificate{client.leaf},
			want: "Hash=" + hash},
		{name: "istio subject uri dns", local: local, chain: []*x509.Certificate{client.leaf},
			details: state.ClientCertDetails{Subject: true, URI: true, DNS: true},
			want: by + ";Hash=" + hash + `;Subject="CN=Test \"Client\",O=Lyft\, Inc"` +
				";URI=spiffe://td/ns/default/sa/client;DNS=a.example.com;DNS=b.example.com"},
		{name: "empty subject and URI keep their keys", local: local, chain: []*x509.Certificate{bare.leaf},
			details: state.ClientCertDetails{Subject: true, URI: true, DNS: true},
			want:    by + ";Hash=" + sha256Hex(bare.leaf.Raw) + `;Subject="";URI=`},
		{name: "cert and chain", local: local, chain: []*x509.Certificate{client.leaf, ca.leaf},
			details: state.ClientCertDetails{Cert: true, Chain: true},
			want: by + ";Hash=" + hash + `;Cert="` + pemEscaped(client.leaf) + `";Chain="` +
				pemEscaped(client.leaf) + pemEscaped(ca.leaf) + `"`},
		{name: "by with separators is quoted", local: []string{`spiffe://td/a;b`, `spiffe://td/x"y`}, chain: []*x509.Certificate{client.leaf},
			want: `By="spiffe://td/a;b";By="spiffe://td/x\"y";Hash=` + hash},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := xfccElement(tc.details, tc.local, tc.chain); got != tc.want {
				t.Errorf("element\n got %s\nwant %s", got, tc.want)
			}
		})
	}
}

// TestXFCCValueQuoting: values are bare unless they hold , ; = or ".
func TestXFCCValueQuoting(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"spiffe://cluster.local/ns/default/sa/app", "spiffe://cluster.local/ns/default/sa/app"},
		{"a,b", `"a,b"`},
		{"a;b", `"a;b"`},
		{"k=v", `"k=v"`},
		{`say "hi"`, `"say \"hi\""`},
		{`back\slash,`, `"back\\slash,"`},
	} {
		var b strings.Builder
		writeXFCCValue(&b, tc.in)
		if b.String() != tc.want {
			t.Errorf("writeXFCCValue(%q) = %s, want %s", tc.in, b.String(), tc.want)
		}
	}
}

// TestPlanXFCC: every mode against a connection with a client
// certificate, TLS without one, and plaintext.
func TestPlanXFCC(t *testing.T) {
	ca := newXFCCCert(t, nil, pkix.Name{CommonName: "ca"}, nil, nil, true)
	client := newXFCCCert(t, ca, pkix.Name{}, []string{"spiffe://td/sa/client"}, nil, false)
	mtls := &ConnInfo{TLS: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{client.leaf}}, LocalURISANs: []string{"spiffe://td/sa/server"}}
	oneWay := &ConnInfo{TLS: &tls.ConnectionState{}}
	plain := &ConnInfo{}
	elem := "By=spiffe://td/sa/server;Hash=" + sha256Hex(client.leaf.Raw)

	for _, tc := range []struct {
		mode state.ForwardClientCert
		info *ConnInfo
		want xfccPlan
	}{
		{state.ForwardClientCertSanitize, mtls, xfccPlan{act: xfccRemove}},
		{state.ForwardClientCertSanitize, plain, xfccPlan{act: xfccRemove}},
		{state.ForwardClientCertForwardOnly, mtls, xfccPlan{act: xfccKeep}},
		{state.ForwardClientCertForwardOnly, oneWay, xfccPlan{act: xfccRemove}},
		{state.ForwardClientCertForwardOnly, plain, xfccPlan{act: xfccRemove}},
		{state.ForwardClientCertAppendForward, mtls, xfccPlan{act: xfccAppend, elem: elem}},
		{state.ForwardClientCertAppendForward, oneWay, xfccPlan{act: xfccRemove}},
		{state.ForwardClientCertAppendForward, plain, xfccPlan{act: xfccRemove}},
		{state.ForwardClientCertSanitizeSet, mtls, xfccPlan{act: xfccSet, elem: elem}},
		{state.ForwardClientCertSanitizeSet, plain, xfccPlan{act: xfccRemove}},
		{state.ForwardClientCertAlwaysForwardOnly, mtls, xfccPlan{act: xfccKeep}},
		{state.ForwardClientCertAlwaysForwardOnly, plain, xfccPlan{act: xfccKeep}},
	} {
		name := tc.mode.String() + "/" + map[*ConnInfo]string{mtls: "mtls", oneWay: "tls", plain: "plain"}[tc.info]
		t.Run(name, func(t *testing.T) {
			got := planXFCC(&state.HTTPConnectionManager{ForwardClientCert: tc.mode}, tc.info)
			if got != tc.want {
				t.Errorf("plan = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// xfccEnv is a proxy behind a real TLS listener that asks for (but does
// not require) client certificates, filling ConnInfo like dataplane does,
// in front of a backend that echoes the XFCC lines it got.
type xfccEnv struct {
	penv   *proxyEnv
	addr   string
	ca     *xfccCert
	server *xfccCert
	client *xfccCert
}

func newXFCCEnv(t *testing.T, mode state.ForwardClientCert, details state.ClientCertDetails) *xfccEnv {
	ca := newXFCCCert(t, nil, pkix.Name{CommonName: "ca"}, nil, nil, true)
	x := &xfccEnv{
		ca:     ca,
		server: newXFCCCert(t, ca, pkix.Name{}, []string{"spiffe://td/ns/default/sa/server"}, []string{"server.test"}, false),
		client: newXFCCCert(t, ca, pkix.Name{}, []string{"spiffe://td/ns/default/sa/client"}, []string{"client.example"}, false),
	}
	be := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Join(r.Header.Values("X-Forwarded-Client-Cert"), "|"))
	}))
	hcm := simpleHCM("be")
	hcm.ForwardClientCert, hcm.ClientCertDetails = mode, details
	// The proxyEnv serves its own plaintext listener and manages the
	// proxy; the TLS listener here feeds the same proxy.
	x.penv = newProxyEnv(t, hcm, h1Cluster("be", be.hostport()))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	x.addr = ln.Addr().String()
	cfg := &tls.Config{
		Certificates: []tls.Certificate{x.server.tls},
		ClientAuth:   tls.RequestClientCert,
		NextProtos:   []string{"h2", "http/1.1"},
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc := tls.Server(c, cfg)
				if err := tc.HandshakeContext(ctx); err != nil {
					c.Close()
					return
				}
				st := tc.ConnectionState()
				info := &ConnInfo{
					Remote: netip.MustParseAddrPort(c.RemoteAddr().String()),
					Local:  netip.MustParseAddrPort(c.LocalAddr().String()),
					TLS:    &st, LocalURISANs: []string{"spiffe://td/ns/default/sa/server"},
				}
				x.penv.proxy.ServeConn(ctx, tc, hcm, info)
			}()
		}
	}()
	// Registered after newProxyEnv's cleanup, so it runs first.
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	return x
}

// get sends GET / with the given XFCC over TLS (a client certificate when
// withCert) speaking h2 or HTTP/1.1, and returns what the backend saw.
func (x *xfccEnv) get(t *testing.T, h2, withCert bool, xfcc string) string {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(x.ca.leaf)
	cfg := &tls.Config{RootCAs: pool, ServerName: "server.test"}
	if withCert {
		cfg.Certificates = []tls.Certificate{x.client.tls}
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	if h2 {
		tr.ForceAttemptHTTP2 = true
	} else {
		cfg.NextProtos = []string{"http/1.1"}
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("GET", "https://"+x.addr+"/", nil)
	if xfcc != "" {
		req.Header.Set("X-Forwarded-Client-Cert", xfcc)
	}
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, b)
	}
	if wantProto := map[bool]int{true: 2, false: 1}[h2]; resp.ProtoMajor != wantProto {
		t.Fatalf("spoke HTTP/%d, want HTTP/%d", resp.ProtoMajor, wantProto)
	}
	return string(b)
}

// TestXFCCCodecs: on both downstream codecs the backend sees the header
// the mode prescribes: this hop's element appended to or replacing what
// the client sent over mTLS, nothing from a client without a certificate,
// and the client's header untouched under ALWAYS_FORWARD_ONLY.
func TestXFCCCodecs(t *testing.T) {
	const prev = `By=spiffe://td/ns/default/sa/edge;Hash=abc;URI=spiffe://td/ns/default/sa/user`
	istio := state.ClientCertDetails{Subject: true, URI: true, DNS: true}
	for _, tc := range []struct {
		name     string
		mode     state.ForwardClientCert
		withCert bool
		sent     string
		want     func(x *xfccEnv) string
	}{
		{name: "append over mtls", mode: state.ForwardClientCertAppendForward, withCert: true, sent: prev,
			want: func(x *xfccEnv) string { return prev + "," + x.elem() }},
		{name: "append with nothing sent", mode: state.ForwardClientCertAppendForward, withCert: true,
			want: func(x *xfccEnv) string { return x.elem() }},
		{name: "append without client cert removes", mode: state.ForwardClientCertAppendForward, sent: prev,
			want: func(*xfccEnv) string { return "" }},
		{name: "sanitize set replaces", mode: state.ForwardClientCertSanitizeSet, withCert: true, sent: prev,
			want: func(x *xfccEnv) string { return x.elem() }},
		{name: "forward only over mtls", mode: state.ForwardClientCertForwardOnly, withCert: true, sent: prev,
			want: func(*xfccEnv) string { return prev }},
		{name: "sanitize removes", mode: state.ForwardClientCertSanitize, withCert: true, sent: prev,
			want: func(*xfccEnv) string { return "" }},
		{name: "always forward only without cert", mode: state.ForwardClientCertAlwaysForwardOnly, sent: prev,
			want: func(*xfccEnv) string { return prev }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := newXFCCEnv(t, tc.mode, istio)
			want := tc.want(x)
			for _, h2 := range []bool{false, true} {
				if got := x.get(t, h2, tc.withCert, tc.sent); got != want {
					t.Errorf("h2=%v: backend saw\n %q\nwant\n %q", h2, got, want)
				}
			}
		})
	}
}

// elem is the element the proxy adds for x's client certificate under
// Istio's details (subject, uri, dns).
func (x *xfccEnv) elem() string {
	return "By=spiffe://td/ns/default/sa/server;Hash=" + sha256Hex(x.client.leaf.Raw) +
		`;Subject="";URI=spiffe://td/ns/default/sa/client;DNS=client.example`
}

// TestXFCCInproc: the in-process RoundTrip applies the same treatment from
// the ConnInfo it is given, and removes the header for the default caller.
func TestXFCCInproc(t *testing.T) {
	x := newXFCCEnv(t, state.ForwardClientCertAppendForward, state.ClientCertDetails{Subject: true, URI: true, DNS: true})
	hcm := simpleHCM("be")
	hcm.ForwardClientCert, hcm.ClientCertDetails = state.ForwardClientCertAppendForward, state.ClientCertDetails{Subject: true, URI: true, DNS: true}
	info := &ConnInfo{
		Remote:       netip.MustParseAddrPort("127.0.0.1:1234"),
		TLS:          &tls.ConnectionState{PeerCertificates: []*x509.Certificate{x.client.leaf}},
		LocalURISANs: []string{"spiffe://td/ns/default/sa/server"},
	}
	for _, tc := range []struct {
		name string
		info *ConnInfo
		want string
	}{
		{"mtls caller", info, "old," + x.elem()},
		{"default caller", nil, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://svc/", nil)
			req.Header.Set("X-Forwarded-Client-Cert", "old")
			resp, err := x.penv.proxy.RoundTrip(req, hcm, tc.info)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != tc.want {
				t.Errorf("backend saw %q, want %q", b, tc.want)
			}
			if got := req.Header.Get("X-Forwarded-Client-Cert"); got != "old" {
				t.Errorf("caller's request header changed to %q", got)
			}
		})
	}
}
