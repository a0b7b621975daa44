package integration

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// xfccEcho is a backend answering with the x-forwarded-client-cert lines
// it received, joined by "|" ("" when none).
func xfccEcho(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Join(r.Header.Values("X-Forwarded-Client-Cert"), "|"))
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })
	return lis.Addr().String()
}

// TestXFCCSidecarInbound: the binary's mTLS inbound HTTP listener, shaped
// like Istio's sidecar inbound (APPEND_FORWARD with subject, uri and dns),
// appends its element to the XFCC a SPIFFE client sent, on HTTP/1.1 and
// HTTP/2; the element names the proxy's own identity (By) and the client
// certificate (Hash, URI). A plaintext client's XFCC is removed.
func TestXFCCSidecarInbound(t *testing.T) {
	cp := startControlPlane(t)
	echo := xfccEcho(t)
	ca := newRBACCA(t)
	srvPEM, srvKey, _ := ca.issue(t, mtlsServerID, "server.test")
	_, _, client := ca.issue(t, mtlsClientID, "")
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)

	inline := func(b []byte) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
	}
	downTLS := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: inline(srvPEM), PrivateKey: inline(srvKey)}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inline(ca.pem)}},
			AlpnProtocols: []string{"h2", "http/1.1"},
		},
	}
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix:               "inbound",
		RouteSpecifier:           &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: routeConfig("inbound", routeTo("be"))},
		ForwardClientCertDetails: hcmv3.HttpConnectionManager_APPEND_FORWARD,
		SetCurrentClientCertDetails: &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{
			Subject: wrapperspb.Bool(true), Dns: true, Uri: true,
		},
		HttpFilters: []*hcmv3.HttpFilter{
			{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: anyOf(t, &routerv3.Router{})}},
		},
	}
	hcmFilter := &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: anyOf(t, hcm)}}
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	lis := listenerOn(t, "inbound", addr, hcmFilter)
	lis.ListenerFilters = []*listenerv3.ListenerFilter{{
		Name:       "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: anyOf(t, &tlsinspectorv3.TlsInspector{})},
	}}
	lis.FilterChains = []*listenerv3.FilterChain{
		{
			Name:             "mtls",
			FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "tls"},
			TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
				ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: anyOf(t, downTLS)}},
			Filters: []*listenerv3.Filter{hcmFilter},
		},
		{
			Name:             "plaintext",
			FilterChainMatch: &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"},
			Filters:          []*listenerv3.Filter{hcmFilter},
		},
	}
	cp.set(lis, edsCluster("be", 0, false), endpoints(t, "be", echo))
	startProxy(t, cp, proxyOpts{})

	const prev = `By=spiffe://cluster.local/ns/default/sa/edge;Hash=00ff;URI=spiffe://cluster.local/ns/default/sa/user`
	sum := sha256.Sum256(client.Leaf.Raw)
	want := prev + ",By=" + mtlsServerID + ";Hash=" + hex.EncodeToString(sum[:]) + `;Subject="";URI=` + mtlsClientID

	mtlsGet := func(h2 bool) (string, error) {
		cfg := &tls.Config{ServerName: "server.test", RootCAs: roots, Certificates: []tls.Certificate{client}}
		tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
		if h2 {
			tr.ForceAttemptHTTP2 = true
		} else {
			cfg.NextProtos = []string{"http/1.1"}
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		defer tr.CloseIdleConnections()
		return xfccGet(tr, "https://"+addr+"/", prev, map[bool]int{true: 2, false: 1}[h2])
	}
	eventually(t, 10*time.Second, func() error {
		_, err := mtlsGet(false)
		return err
	})

	for _, tc := range []struct {
		name string
		get  func() (string, error)
		want string
	}{
		{"mtls HTTP/1.1 appends", func() (string, error) { return mtlsGet(false) }, want},
		{"mtls HTTP/2 appends", func() (string, error) { return mtlsGet(true) }, want},
		{"plaintext is sanitized", func() (string, error) {
			return xfccGet(&http.Transport{DisableKeepAlives: true}, "http://"+addr+"/", prev, 1)
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.get()
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("backend saw\n %q\nwant\n %q", got, tc.want)
			}
		})
	}
}

// xfccGet sends GET url carrying XFCC xfcc through tr and returns the
// body of a 200 answered over HTTP/proto.
func xfccGet(tr *http.Transport, url, xfcc string, proto int) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("X-Forwarded-Client-Cert", xfcc)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, b)
	}
	if resp.ProtoMajor != proto {
		return "", errors.New("answered over " + resp.Proto)
	}
	return string(b), nil
}
