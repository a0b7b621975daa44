package integration

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httprbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	netrbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ---- a test CA issuing SPIFFE certificates ----

type rbacCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newRBACCA(t *testing.T) *rbacCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rbac test root", Organization: []string{"cluster.local"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &rbacCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue returns a leaf for a SPIFFE id (client) or a DNS name (server),
// as PEM and as a tls.Certificate.
func (ca *rbacCA) issue(t *testing.T, spiffeID, dnsName string) (certPEM, keyPEM []byte, c tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	if spiffeID != "" {
		u, err := url.Parse(spiffeID)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = []*url.URL{u}
	}
	if dnsName != "" {
		tmpl.DNSNames = []string{dnsName}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder})
	c, err = tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM, c
}

// mtlsSocket is a DownstreamTlsContext requiring client certificates from ca.
func (ca *rbacCA) mtlsSocket(t *testing.T, certPEM, keyPEM []byte) *corev3.TransportSocket {
	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	ctx := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inline(certPEM), PrivateKey: inline(keyPEM)}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline(ca.pem)}},
			AlpnProtocols: []string{"http/1.1"},
		},
	}
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, ctx)}}
}

// ---- Istio-shaped RBAC ----

func rbacExact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

func rbacPrefix(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: s}}
}

func rbacPath(m *matcherv3.StringMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: m}}}}
}

func rbacOr(rules ...*rbacv3.Permission) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: rules}}}
}

func rbacAnyPrincipal() *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}
}

func rbacPrincipal(m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: m}}}
}

// rbacNamespace is Istio's namespaces: [NS] source: a safe_regex on the
// SPIFFE principal.
func rbacNamespace(ns string) *rbacv3.Principal {
	return rbacPrincipal(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
		Regex: ".*/ns/" + ns + "/.*"}}})
}

func rbacHTTPFilter(t *testing.T, name string, action rbacv3.RBAC_Action, policies map[string]*rbacv3.Policy) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t,
		&httprbacv3.RBAC{Rules: &rbacv3.RBAC{Action: action, Policies: policies}})}}
}

// ---- clients ----

// rbacRequest sends one raw HTTP/1.1 request over a new mTLS connection
// (raw, so unnormalized paths reach the proxy as written) and returns the
// status and body.
func rbacRequest(t *testing.T, addr string, cert tls.Certificate, roots *x509.CertPool, method, path string) (int, string) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 3 * time.Second}, "tcp", addr,
		&tls.Config{ServerName: "server.test", RootCAs: roots, Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatalf("%s %s: dial: %v", method, path, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: svc\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", method, path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRBACHTTPIstioPolicies runs Istio-shaped policies on an mTLS inbound
// listener: a DENY on /admin that no path spelling bypasses, an ALLOW by
// service account or namespace and method, and a LOG policy that lets
// everything through. The backend echoes the path it received: it must be
// the path the policy judged.
func TestRBACHTTPIstioPolicies(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "be")
	ca := newRBACCA(t)
	srvCert, srvKey, _ := ca.issue(t, "", "server.test")
	_, _, bar := ca.issue(t, "spiffe://cluster.local/ns/foo/sa/bar", "")
	_, _, baz := ca.issue(t, "spiffe://cluster.local/ns/foo/sa/baz", "")
	_, _, ops := ca.issue(t, "spiffe://cluster.local/ns/ops/sa/admin", "")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)

	get := &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":method",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: rbacExact("GET")}}}}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:                   "inbound",
		NormalizePath:                wrapperspb.Bool(true),
		MergeSlashes:                 true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD,
		RouteSpecifier:               &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: routeConfig("inbound", routeTo("be"))},
		HttpFilters: []*hcmv3.HttpFilter{
			rbacHTTPFilter(t, "envoy.filters.http.rbac", rbacv3.RBAC_DENY, map[string]*rbacv3.Policy{
				"ns[foo]-policy[deny-admin]-rule[0]": {
					Permissions: []*rbacv3.Permission{rbacOr(rbacPath(rbacExact("/admin")), rbacPath(rbacPrefix("/admin/")))},
					Principals:  []*rbacv3.Principal{rbacAnyPrincipal()},
				}}),
			rbacHTTPFilter(t, "envoy.filters.http.rbac.allow", rbacv3.RBAC_ALLOW, map[string]*rbacv3.Policy{
				"ns[foo]-policy[allow]-rule[0]": {
					Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{rbacOr(get)}}}}},
					Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
						rbacPrincipal(rbacExact("spiffe://cluster.local/ns/foo/sa/bar")), rbacNamespace("ops"),
					}}}}},
				}}),
			rbacHTTPFilter(t, "envoy.filters.http.rbac.log", rbacv3.RBAC_LOG, map[string]*rbacv3.Policy{
				"log-everything": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
					Principals: []*rbacv3.Principal{rbacAnyPrincipal()}}}),
			{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})}},
		},
	}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	lis := listenerOn(t, "inbound", addr, &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}})
	lis.FilterChains[0].TransportSocket = ca.mtlsSocket(t, srvCert, srvKey)
	cp.set(lis, edsCluster("be", 0, false), endpoints(t, "be", be.addr))
	startProxy(t, cp, proxyOpts{})
	eventually(t, 10*time.Second, func() error {
		if code, _ := rbacRequestNoFail(addr, bar, roots, "/ready"); code != 200 {
			return fmt.Errorf("status %d", code)
		}
		return nil
	})

	t.Run("principals and methods", func(t *testing.T) {
		for _, tc := range []struct {
			who    string
			cert   tls.Certificate
			method string
			code   int
		}{
			{"bar", bar, "GET", 200},
			{"ops namespace", ops, "GET", 200},
			{"baz", baz, "GET", 403},
			{"bar POST", bar, "POST", 403},
		} {
			code, body := rbacRequest(t, addr, tc.cert, roots, tc.method, "/hello")
			if code != tc.code {
				t.Errorf("%s: %d %q, want %d", tc.who, code, body, tc.code)
			}
			if code == 403 && body != "RBAC: access denied" {
				t.Errorf("%s: body %q", tc.who, body)
			}
			if code == 200 && !strings.Contains(body, " /hello ") {
				t.Errorf("%s: backend saw %q", tc.who, body)
			}
		}
	})

	t.Run("path normalization bypass list", func(t *testing.T) {
		before := be.hits.Load()
		for _, p := range []string{"/admin", "//admin", "/x/../admin", "/%61dmin", "/admin%2F", "/admin%2fsecret",
			"/./admin", "/%2e%2e/admin", "/x%2F..%2Fadmin", "///admin///"} {
			if code, body := rbacRequest(t, addr, bar, roots, "GET", p); code != 403 {
				t.Errorf("%s: %d %q, want 403", p, code, body)
			}
		}
		if n := be.hits.Load() - before; n != 0 {
			t.Fatalf("backend got %d denied requests", n)
		}
		for _, tc := range []struct{ in, want string }{
			{"/x/../public", "/public"}, {"//a//b?q=//x", "/a/b?q=//x"}, {"/%70ublic", "/public"},
		} {
			code, body := rbacRequest(t, addr, bar, roots, "GET", tc.in)
			if code != 200 || !strings.Contains(body, " "+tc.want+" ") {
				t.Errorf("%s: %d %q, want 200 with %s", tc.in, code, body, tc.want)
			}
		}
	})
}

// rbacRequestNoFail is rbacRequest for polling: errors are a zero status.
func rbacRequestNoFail(addr string, cert tls.Certificate, roots *x509.CertPool, path string) (int, string) {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr,
		&tls.Config{ServerName: "server.test", RootCAs: roots, Certificates: []tls.Certificate{cert}})
	if err != nil {
		return 0, err.Error()
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: svc\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestRBACNetworkRecheck: a network RBAC filter on an mTLS tcp_proxy
// listener admits the allowed SPIFFE identity and closes others at once;
// when the policy changes, the open connection that is now denied is closed
// within a second.
func TestRBACNetworkRecheck(t *testing.T) {
	cp := startControlPlane(t)
	echo := startTCPEcho(t)
	ca := newRBACCA(t)
	srvCert, srvKey, _ := ca.issue(t, "", "server.test")
	_, _, bar := ca.issue(t, "spiffe://cluster.local/ns/foo/sa/bar", "")
	_, _, baz := ca.issue(t, "spiffe://cluster.local/ns/foo/sa/baz", "")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))

	listener := func(allowed string) *listenerv3.Listener {
		rbac := &netrbacv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
			"allow": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
				Principals: []*rbacv3.Principal{rbacPrincipal(rbacExact(allowed))}},
		}}}
		tp := &tcpv3.TcpProxy{StatPrefix: "tcp", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "echo"}}
		l := listenerOn(t, "tcp-in", addr, &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, tp)}})
		fc := l.FilterChains[0]
		fc.Filters = append([]*listenerv3.Filter{{Name: "envoy.filters.network.rbac",
			ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, rbac)}}}, fc.Filters...)
		fc.TransportSocket = ca.mtlsSocket(t, srvCert, srvKey)
		return l
	}
	cluster, eps := edsCluster("echo", 0, false), endpoints(t, "echo", echo)
	cp.set(listener("spiffe://cluster.local/ns/foo/sa/bar"), cluster, eps)
	startProxy(t, cp, proxyOpts{})

	dial := func(cert tls.Certificate) *tls.Conn {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", addr,
			&tls.Config{ServerName: "server.test", RootCAs: roots, Certificates: []tls.Certificate{cert}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	echoes := func(c *tls.Conn, msg string) error {
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Write([]byte(msg)); err != nil {
			return err
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil {
			return err
		}
		if string(got) != msg {
			return fmt.Errorf("echo %q", got)
		}
		return nil
	}
	var open *tls.Conn
	eventually(t, 10*time.Second, func() error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr,
			&tls.Config{ServerName: "server.test", RootCAs: roots, Certificates: []tls.Certificate{bar}})
		if err != nil {
			return err
		}
		if err := echoes(c, "ping"); err != nil {
			c.Close()
			return err
		}
		open = c
		return nil
	})
	t.Cleanup(func() { open.Close() })

	if err := echoes(dial(baz), "ping"); err == nil {
		t.Fatal("baz was served")
	}

	cp.set(listener("spiffe://cluster.local/ns/foo/sa/baz"), cluster, eps)
	start := time.Now()
	// The update reaches the proxy over ADS; the connection must be closed
	// within a second of the policy taking effect, which new connections
	// show.
	eventually(t, 5*time.Second, func() error { return echoes(dial(baz), "ping") })
	applied := time.Since(start)
	_ = open.SetReadDeadline(time.Now().Add(time.Second))
	if _, err := open.Read(make([]byte, 1)); err == nil {
		t.Fatal("the now-denied connection is still open")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the now-denied connection was not closed within 1s of the policy applying (%v after the push)", applied)
	}
}
