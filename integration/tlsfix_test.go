package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// tlsfixCA is a CA made in the test (root, or intermediate under parent).
type tlsfixCA struct {
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	parent *tlsfixCA
}

var tlsfixSerial atomic.Int64

func tlsfixIssue(t *testing.T, tmpl *x509.Certificate, parent *tlsfixCA) *tlsfixCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(100 + tlsfixSerial.Add(1))
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
	return &tlsfixCA{cert: c, key: key, parent: parent}
}

func tlsfixCAUnder(t *testing.T, parent *tlsfixCA, cn string) *tlsfixCA {
	return tlsfixIssue(t, &x509.Certificate{Subject: pkix.Name{CommonName: cn}, IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}, parent)
}

// leaf issues a server certificate for dns, with the intermediates up to
// the root (excluded) in its chain.
func (ca *tlsfixCA) leaf(t *testing.T, dns ...string) tls.Certificate {
	l := tlsfixIssue(t, &x509.Certificate{Subject: pkix.Name{CommonName: "backend"}, DNSNames: dns,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca)
	chain := [][]byte{l.cert.Raw}
	for p := ca; p.parent != nil; p = p.parent {
		chain = append(chain, p.cert.Raw)
	}
	return tls.Certificate{Certificate: chain, PrivateKey: l.key}
}

func (ca *tlsfixCA) pem() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
}

// sniBackend is an HTTP/1.1-over-TLS server answering with the SNI of the
// connection; it counts TLS connections per SNI.
type sniBackend struct {
	addr  string
	mu    sync.Mutex
	conns map[string]int
}

func startSNIBackend(t *testing.T, cert tls.Certificate) *sniBackend {
	t.Helper()
	b := &sniBackend{conns: map[string]int{}}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"},
		VerifyConnection: func(cs tls.ConnectionState) error {
			b.mu.Lock()
			b.conns[cs.ServerName]++
			b.mu.Unlock()
			return nil
		}}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	b.addr = lis.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "sni=%s host=%s", r.TLS.ServerName, r.Host)
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return b
}

func (b *sniBackend) connsBySNI() map[string]int {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]int{}
	for k, v := range b.conns {
		out[k] = v
	}
	return out
}

// tlsfixCluster is an EDS HTTP/1.1 cluster originating TLS verified
// against rootPEM, with auto_sni + auto_san_validation when auto, and
// max_verify_depth when depth >= 0.
func tlsfixCluster(t *testing.T, name, rootPEM string, auto bool, depth int) *clusterv3.Cluster {
	c := edsCluster(name, clusterv3.Cluster_ROUND_ROBIN, false)
	vc := &tlsv3.CertificateValidationContext{TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: rootPEM}}}
	if depth >= 0 {
		vc.MaxVerifyDepth = wrapperspb.UInt32(uint32(depth))
	}
	c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{
		TypedConfig: anyOf(t, &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc},
		}}),
	}}
	if auto {
		opts := &httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
			}},
			// What istiod sets for a SIMPLE DestinationRule without sni.
			UpstreamHttpProtocolOptions: &corev3.UpstreamHttpProtocolOptions{AutoSni: true, AutoSanValidation: true},
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": anyOf(t, opts)}
	}
	return c
}

func prefixRoute(prefix, cluster string) *routev3.Route {
	return &routev3.Route{
		Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: prefix}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
	}
}

// TestTLSFixAutoSNIAndVerifyDepth runs the real binary against TLS
// backends: auto_sni sends each request's Host as SNI over its own
// connections, auto_san_validation refuses a certificate without the name
// (503 UF), and max_verify_depth counts leaf -> intermediate -> root as 2.
func TestTLSFixAutoSNIAndVerifyDepth(t *testing.T) {
	root := tlsfixCAUnder(t, nil, "root")
	inter := tlsfixCAUnder(t, root, "intermediate")
	good := startSNIBackend(t, inter.leaf(t, "a.svc.test", "b.svc.test"))
	wrongName := startSNIBackend(t, inter.leaf(t, "other.svc.test"))

	cp := startControlPlane(t)
	listen := loopAddr(t)
	clusters := []struct {
		name  string
		addr  string
		auto  bool
		depth int
	}{
		{"auto", good.addr, true, -1},
		{"wrongname", wrongName.addr, true, -1},
		{"depth0", good.addr, false, 0},
		{"depth1", good.addr, false, 1},
		{"depth2", good.addr, false, 2},
	}
	res := []types.Resource{httpListener(t, "in", listen, "rc")}
	var routes []*routev3.Route
	for _, c := range clusters {
		res = append(res, tlsfixCluster(t, c.name, root.pem(), c.auto, c.depth), endpoints(t, c.name, c.addr))
		routes = append(routes, prefixRoute("/"+c.name, c.name))
	}
	res = append(res, routeConfig("rc", routes...))
	cp.set(res...)
	startProxy(t, cp, proxyOpts{})

	client := h1Client()
	do := func(path, host string) (int, string, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+listen+path, nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s host %s: %v", path, host, err)
		}
		defer resp.Body.Close()
		var sb strings.Builder
		buf := make([]byte, 512)
		for {
			n, err := resp.Body.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				break
			}
		}
		return resp.StatusCode, sb.String(), resp.Header.Get("x-meshlet-response-flags")
	}
	eventually(t, 10*time.Second, func() error {
		if code, body, _ := do("/depth2", "x"); code != 200 {
			return fmt.Errorf("config not live: %d %s", code, body)
		}
		return nil
	})

	t.Run("auto_sni", func(t *testing.T) {
		for range 3 {
			for _, host := range []string{"a.svc.test", "b.svc.test:8443"} {
				code, body, _ := do("/auto", host)
				name, _, _ := strings.Cut(host, ":")
				if code != 200 || !strings.HasPrefix(body, "sni="+name+" ") {
					t.Fatalf("host %s: %d %q, want 200 with sni=%s", host, code, body, name)
				}
			}
		}
		got := good.connsBySNI()
		if got["a.svc.test"] != 1 || got["b.svc.test"] != 1 {
			keys := make([]string, 0, len(got))
			for k, v := range got {
				keys = append(keys, fmt.Sprintf("%q:%d", k, v))
			}
			sort.Strings(keys)
			t.Fatalf("TLS connections by SNI %v, want one each for a.svc.test and b.svc.test", keys)
		}
	})
	t.Run("auto_san_validation", func(t *testing.T) {
		code, body, flags := do("/wrongname", "a.svc.test")
		if code != 503 || !strings.Contains(flags, "UF") {
			t.Fatalf("certificate without the name: %d %q flags %q, want 503 UF", code, body, flags)
		}
		if n := wrongName.connsBySNI()["a.svc.test"]; n == 0 {
			t.Fatal("the refused handshake did not send the Host as SNI")
		}
	})
	t.Run("max_verify_depth", func(t *testing.T) {
		for _, tc := range []struct {
			path string
			code int
		}{{"/depth0", 503}, {"/depth1", 503}, {"/depth2", 200}} {
			code, body, flags := do(tc.path, "x")
			if code != tc.code || tc.code == 503 && !strings.Contains(flags, "UF") {
				t.Errorf("%s: %d %q flags %q, want %d", tc.path, code, body, flags, tc.code)
			}
		}
	})
}
