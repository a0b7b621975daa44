//lint:file-ignore SA1019 http_uri is deprecated in Envoy but is how the metadata server URL is configured.

package integration

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	gcpauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/gcp_authn/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The serverless ingress scenario of issue 4: a mesh client reaches a
// public HTTPS endpoint (think Cloud Run) through the proxy. The cluster
// names the endpoint by hostname, the route rewrites Host to it
// (auto_host_rewrite), TLS verifies the server against the OS roots
// (system_root_certs; SSL_CERT_FILE points the proxy's OS store at a test
// root), and gcp_authn adds an ID token for the cluster's audience fetched
// from a fake metadata server.

const serverlessHost = "hello-abc123-uc.a.run.app"

// publicPKI is a root, an intermediate and a wildcard leaf, chained the way
// public CAs issue: the server sends leaf + intermediate, clients trust
// only the root.
type publicPKI struct {
	rootPEM []byte
	leaf    tls.Certificate
}

func newPublicPKI(t *testing.T, dnsNames ...string) *publicPKI {
	t.Helper()
	mk := func(tmpl, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl.SerialNumber = serial
		tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, key, der
	}
	ca := func(cn string) *x509.Certificate {
		return &x509.Certificate{Subject: pkix.Name{CommonName: cn, Organization: []string{"Test Public Trust"}},
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	}
	root, rootKey, rootDER := mk(ca("Test Public Root R1"), nil, nil)
	inter, interKey, interDER := mk(ca("Test Public Issuing CA 1"), root, rootKey)
	_, leafKey, leafDER := mk(&x509.Certificate{Subject: pkix.Name{CommonName: dnsNames[0]}, DNSNames: dnsNames,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, inter, interKey)
	return &publicPKI{
		rootPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rootDER}),
		leaf:    tls.Certificate{Certificate: [][]byte{leafDER, interDER}, PrivateKey: leafKey},
	}
}

// serverlessBackend is the HTTPS endpoint; it records what each request
// carried.
type serverlessBackend struct {
	addr string
	mu   sync.Mutex
	seen []seenRequest
}

type seenRequest struct{ host, sni, auth string }

func startServerlessBackend(t *testing.T, pki *publicPKI) *serverlessBackend {
	t.Helper()
	b := &serverlessBackend{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.seen = append(b.seen, seenRequest{host: r.Host, sni: r.TLS.ServerName, auth: r.Header.Get("Authorization")})
		b.mu.Unlock()
		if r.Header.Get("Authorization") == "" {
			http.Error(w, "missing token", http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "hello from serverless")
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{pki.leaf}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	b.addr = srv.Listener.Addr().String()
	return b
}

func (b *serverlessBackend) requests() []seenRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]seenRequest(nil), b.seen...)
}

// metadataServer is a fake GCE metadata server issuing unsigned JWTs.
type metadataServer struct {
	url   string
	mu    sync.Mutex
	calls map[string]int
	down  bool
}

func startMetadataServer(t *testing.T) *metadataServer {
	t.Helper()
	m := &metadataServer{calls: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Metadata-Flavor") != "Google" || r.URL.Path != "/computeMetadata/v1/instance/service-accounts/default/identity" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		aud := r.URL.Query().Get("audience")
		m.mu.Lock()
		m.calls[aud]++
		down := m.down
		m.mu.Unlock()
		if down {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		enc := base64.RawURLEncoding
		claims, _ := json.Marshal(map[string]any{"aud": aud, "iss": "https://accounts.google.com", "exp": time.Now().Add(time.Hour).Unix()})
		fmt.Fprintf(w, "%s.%s.%s", enc.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT"}`)), enc.EncodeToString(claims), enc.EncodeToString([]byte("sig")))
	}))
	t.Cleanup(srv.Close)
	m.url = srv.URL + "/computeMetadata/v1/instance/service-accounts/default/identity?audience=[AUDIENCE]"
	return m
}

func (m *metadataServer) callsFor(aud string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.calls[aud]
}

func (m *metadataServer) setDown(down bool) {
	m.mu.Lock()
	m.down = down
	m.mu.Unlock()
}

// serverlessResources are the listener (gcp_authn before the router), the
// route (auto_host_rewrite), the cluster (TLS with system roots, audience
// in typed_filter_metadata) and its endpoint (hostname + loopback address).
func serverlessResources(t *testing.T, listenAddr, backendAddr, metadataURI, audience string) []types.Resource {
	t.Helper()
	gcp := &gcpauthnv3.GcpAuthnFilterConfig{
		HttpUri: &corev3.HttpUri{Uri: metadataURI, Timeout: durationpb.New(2 * time.Second),
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "metadata"}},
		CacheConfig: &gcpauthnv3.TokenCacheConfig{CacheSize: wrapperspb.UInt64(10)},
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: "serverless",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "serverless",
			ConfigSource: &corev3.ConfigSource{ResourceApiVersion: corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: "envoy.filters.http.gcp_authn", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, gcp)}},
			{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})}},
		},
	}
	lis := listenerOn(t, "serverless", listenAddr, &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}})

	route := &routev3.Route{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier:     &routev3.RouteAction_Cluster{Cluster: "cloud-run"},
			HostRewriteSpecifier: &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)},
		}},
	}

	tlsCtx := &tlsv3.UpstreamTlsContext{Sni: serverlessHost, CommonTlsContext: &tlsv3.CommonTlsContext{
		ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			SystemRootCerts: &tlsv3.CertificateValidationContext_SystemRootCerts{},
		}},
	}}
	cl := edsCluster("cloud-run", clusterv3.Cluster_ROUND_ROBIN, false)
	cl.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, tlsCtx)}}
	cl.Metadata = &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{
		"envoy.filters.http.gcp_authn": anyOf(t, &gcpauthnv3.Audience{Url: audience}),
	}}

	h, p := splitHostPort(t, backendAddr)
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: "cloud-run", Endpoints: []*endpointv3.LocalityLbEndpoints{{
		LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: socketAddr(h, p), Hostname: serverlessHost,
		}}}},
	}}}
	return []types.Resource{lis, routeConfig("serverless", route), cl, cla}
}

func TestServerlessIngressGCPAuthn(t *testing.T) {
	pki := newPublicPKI(t, "*.a.run.app", "a.run.app")
	rootFile := filepath.Join(t.TempDir(), "roots.pem")
	if err := os.WriteFile(rootFile, pki.rootPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	// The proxy inherits this: its OS trust store is the test root only.
	t.Setenv("SSL_CERT_FILE", rootFile)
	t.Setenv("SSL_CERT_DIR", t.TempDir())

	be := startServerlessBackend(t, pki)
	md := startMetadataServer(t)
	audience := "https://" + serverlessHost
	cp := startControlPlane(t)
	listenAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	res := serverlessResources(t, listenAddr, be.addr, md.url, audience)
	cp.set(res...)
	px := startProxy(t, cp, proxyOpts{})

	client := h1Client()
	url := "http://" + listenAddr + "/greet"
	eventually(t, 10*time.Second, func() error {
		code, _, body, err := get(client, url, map[string]string{"host": "frontend.default.svc.cluster.local"})
		if err != nil {
			return err
		}
		if code != 200 {
			return fmt.Errorf("status %d: %s", code, body)
		}
		return nil
	})

	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range n / 8 {
				code, _, body, err := get(client, url, map[string]string{"host": "frontend.default.svc.cluster.local"})
				if err == nil && code != 200 {
					err = fmt.Errorf("status %d: %s", code, body)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("request through the proxy failed: %v", err)
	}
	if got := md.callsFor(audience); got != 1 {
		t.Errorf("metadata server calls for %s = %d, want 1 (token cached)", audience, got)
	}
	reqs := be.requests()
	if len(reqs) < n {
		t.Fatalf("backend saw %d requests, want at least %d", len(reqs), n)
	}
	for _, r := range reqs {
		if r.host != serverlessHost || r.sni != serverlessHost {
			t.Fatalf("backend saw Host %q SNI %q, want %q for both", r.host, r.sni, serverlessHost)
		}
		tok, ok := strings.CutPrefix(r.auth, "Bearer ")
		if !ok || tokenAudience(t, tok) != audience {
			t.Fatalf("backend saw Authorization %q, want a Bearer ID token for %s", r.auth, audience)
		}
	}

	// The metadata server going down does not matter while the token is
	// cached; a new audience cannot get one and fails clearly.
	md.setDown(true)
	if code, _, body, err := get(client, url, nil); err != nil || code != 200 {
		t.Fatalf("cached token with the metadata server down: %d %q %v", code, body, err)
	}
	other := "https://other-xyz-uc.a.run.app"
	res = serverlessResources(t, listenAddr, be.addr, md.url, other)
	cp.set(res...)
	eventually(t, 10*time.Second, func() error {
		code, _, body, err := get(client, url, nil)
		if err != nil {
			return err
		}
		if code != 503 || !strings.Contains(body, "gcp_authn") {
			return fmt.Errorf("status %d %q, want 503 from gcp_authn", code, body)
		}
		return nil
	})
	eventually(t, 5*time.Second, func() error {
		if out := px.out.String(); !strings.Contains(out, other) || !strings.Contains(out, "gcp_authn") {
			return fmt.Errorf("proxy log does not name the failed audience %s", other)
		}
		return nil
	})
}

// tokenAudience reads the aud claim of an unsigned test JWT.
func tokenAudience(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return ""
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return ""
	}
	var c struct{ Aud string }
	_ = json.Unmarshal(b, &c)
	return c.Aud
}
