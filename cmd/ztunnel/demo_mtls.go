package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshlet/meshlet/config"
	"github.com/meshlet/meshlet/identity"
	"github.com/meshlet/meshlet/internal/echo"
	"github.com/meshlet/meshlet/telemetry"
	"github.com/meshlet/meshlet/xds"
)

// The mTLS step's identities: the echo service's server-side proxy, the
// caller its ALLOW policy names, and a caller it does not.
const (
	demoTrustDomain = "cluster.local"
	demoNamespace   = "demo"
	demoServerSA    = "echo"
	demoAllowedSA   = "sleep"
	demoDeniedSA    = "intruder"
	// mtlsRequests per caller; each caller uses a few keep-alive
	// connections, so this shows steady state, not only handshakes.
	mtlsRequests = 100
)

func demoID(sa string) identity.ID {
	return identity.ID{TrustDomain: demoTrustDomain, Namespace: demoNamespace, ServiceAccount: sa}
}

// demoSDS names a secret of the proxy's own identity the way Istio does:
// SDS from the local agent's sds-grpc cluster, which the proxy resolves to
// its identity source ("default" = certificate, "ROOTCA" = trust bundle).
func demoSDS(name string) string {
	return fmt.Sprintf(`{name: %s, sds_config: {resource_api_version: V3, api_config_source: {api_type: GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: sds-grpc}}]}}}`, name)
}

// demoServerYAML is the server-side proxy: one STRICT inbound (a TLS filter
// chain requiring a client certificate from the mesh, and no plaintext
// chain) with an HTTP RBAC ALLOW policy for one service account, routing
// to the echo v1 backend.
func demoServerYAML(port, backendPort int) string {
	return fmt.Sprintf(`static_resources:
  listeners:
  - name: inbound-strict
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}
    filter_chains:
    - name: mtls
      filter_chain_match: {transport_protocol: tls}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_certificate_sds_secret_configs: [%s]
            validation_context_sds_secret_config: %s
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: inbound
          route_config:
            virtual_hosts:
            - name: echo
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster: echo}
          http_filters:
          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  ns[%s]-policy[allow-%s]-rule[0]:
                    permissions: [{any: true}]
                    principals: [{authenticated: {principal_name: {exact: "%s"}}}]
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: echo
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
`, port, demoSDS("default"), demoSDS("ROOTCA"), demoNamespace, demoAllowedSA,
		demoID(demoAllowedSA).String(), backendPort)
}

// demoClientYAML is a client-side proxy: a plaintext outbound listener
// whose cluster reaches the server proxy over mTLS, presenting the proxy's
// own identity and accepting only the server's SPIFFE ID.
func demoClientYAML(port, serverPort int) string {
	return fmt.Sprintf(`static_resources:
  listeners:
  - name: outbound
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: outbound, cluster: echo-mtls}
  clusters:
  - name: echo-mtls
    type: STATIC
    connect_timeout: 1s
    transport_socket:
      name: envoy.transport_sockets.tls
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
        sni: outbound_.80_._.echo.demo.svc.cluster.local
        common_tls_context:
          tls_certificate_sds_secret_configs: [%s]
          combined_validation_context:
            default_validation_context:
              match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: "%s"}}]
            validation_context_sds_secret_config: %s
    load_assignment:
      cluster_name: echo-mtls
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
`, port, demoSDS("default"), demoID(demoServerSA).String(), demoSDS("ROOTCA"), serverPort)
}

// peerSink records, per downstream peer principal, the status codes the
// server proxy answered: what the server side saw of its callers.
type peerSink struct {
	mu    sync.Mutex
	codes map[string]map[int]int
}

func (s *peerSink) HTTPDone(r *telemetry.HTTPRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	byCode, ok := s.codes[r.PeerPrincipal]
	if !ok {
		if s.codes == nil {
			s.codes = map[string]map[int]int{}
		}
		// The record's strings are only valid during the call.
		byCode = map[int]int{}
		s.codes[strings.Clone(r.PeerPrincipal)] = byCode
	}
	byCode[r.ResponseCode]++
}

func (s *peerSink) TCPDone(*telemetry.TCPRecord) {}

// mtlsProxy is one in-process proxy of the mTLS step with its identity.
type mtlsProxy struct {
	p   *proxy
	src *identity.Rotating
	id  string
}

func (m *mtlsProxy) stop() {
	if m.p != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_ = m.p.shutdown(ctx)
		cancel()
	}
	m.src.Close()
}

// startMTLSProxy issues sa's identity from ca and starts a proxy with the
// static resources in yml, waiting until its listeners are bound.
func startMTLSProxy(ctx context.Context, ca *identity.CA, sa, yml string, sinks []telemetry.Sink, log *slog.Logger) (*mtlsProxy, error) {
	id := demoID(sa)
	src, err := ca.Source(ctx, id, time.Hour, identity.RotationOptions{Log: log})
	if err != nil {
		return nil, fmt.Errorf("identity %s: %w", id, err)
	}
	m := &mtlsProxy{src: src, id: id.String()}
	b, err := config.Parse(sa+".yaml", []byte(yml))
	if err != nil {
		src.Close()
		return nil, err
	}
	m.p, err = startProxy(proxyConfig{
		Node:      xds.Node{ID: fmt.Sprintf("sidecar~127.0.0.1~%s.%s~%s.svc.cluster.local", sa, demoNamespace, demoNamespace), Cluster: sa + "." + demoNamespace},
		Listeners: b.Listeners,
		Clusters:  b.Clusters,
		DrainTime: time.Second,
		Identity:  src,
		Principal: id.String(),
		Sinks:     sinks,
		Log:       log,
	})
	if err != nil {
		src.Close()
		return nil, fmt.Errorf("proxy %s: %w", sa, err)
	}
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := m.p.waitReady(rctx); err != nil {
		m.stop()
		return nil, fmt.Errorf("proxy %s: %w", sa, err)
	}
	return m, nil
}

// leafID is the SPIFFE ID in the source's current certificate: what the
// proxy presents in its handshakes.
func leafID(src identity.Source) (string, error) {
	cert, err := src.Certificate()
	if err != nil {
		return "", err
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return "", err
		}
	}
	id, err := identity.FromCert(leaf)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s (expires %s)", id, leaf.NotAfter.UTC().Format(time.TimeOnly)), nil
}

// stepMTLS: a server-side proxy for echo v1 with a STRICT inbound and an
// ALLOW policy for sa/sleep; two client-side proxies (sa/sleep and
// sa/intruder) reach it over mTLS. Identities come from the built-in CA in
// a temp dir.
func (d *demoRun) stepMTLS(ctx context.Context) (int, error) {
	d.header("mTLS: built-in CA identities, STRICT inbound, RBAC ALLOW for sa/%s only", demoAllowedSA)
	log := slog.New(slog.DiscardHandler)
	caDir, err := os.MkdirTemp("", "meshlet-demo-ca-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(caDir)
	ca, err := identity.LoadOrCreateCA(caDir)
	if err != nil {
		return 0, fmt.Errorf("built-in CA: %w", err)
	}
	d.say("    built-in CA     root %q in %s", ca.Root().Subject.CommonName, caDir)

	var ports [3]int
	for i := range ports {
		if ports[i], err = freeLoopbackPort(); err != nil {
			return 0, err
		}
	}
	sink := &peerSink{}
	server, err := startMTLSProxy(ctx, ca, demoServerSA, demoServerYAML(ports[0], d.v1HTTPPort), []telemetry.Sink{sink}, log)
	if err != nil {
		return 0, err
	}
	defer server.stop()
	allowed, err := startMTLSProxy(ctx, ca, demoAllowedSA, demoClientYAML(ports[1], ports[0]), nil, log)
	if err != nil {
		return 0, err
	}
	defer allowed.stop()
	denied, err := startMTLSProxy(ctx, ca, demoDeniedSA, demoClientYAML(ports[2], ports[0]), nil, log)
	if err != nil {
		return 0, err
	}
	defer denied.stop()
	for _, row := range []struct {
		name string
		m    *mtlsProxy
		what string
	}{
		{"server proxy", server, fmt.Sprintf("inbound 127.0.0.1:%d (STRICT mTLS -> echo v1)", ports[0])},
		{"client proxy", allowed, fmt.Sprintf("outbound 127.0.0.1:%d", ports[1])},
		{"client proxy", denied, fmt.Sprintf("outbound 127.0.0.1:%d", ports[2])},
	} {
		id, err := leafID(row.m.src)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", row.name, err)
		}
		d.say("    %-15s %s, %s", row.name, id, row.what)
	}

	d.say("    client proxies accept only the server identity %s (match_typed_subject_alt_names)", demoID(demoServerSA))

	// STRICT: a plaintext request straight to the inbound is closed.
	failed := 0
	if status, err := plainGet(ctx, fmt.Sprintf("127.0.0.1:%d", ports[0])); err == nil {
		failed++
		d.say("    plaintext to the STRICT inbound: answered %d (want refused)", status)
	} else {
		d.say("    plaintext to the STRICT inbound: refused (%s)", shortErr(err))
	}

	type outcome struct {
		name, addr string
		want       int
		body       string
	}
	for _, o := range []outcome{
		{"sa/" + demoAllowedSA, fmt.Sprintf("127.0.0.1:%d", ports[1]), http.StatusOK, ""},
		{"sa/" + demoDeniedSA, fmt.Sprintf("127.0.0.1:%d", ports[2]), http.StatusForbidden, ""},
	} {
		c := newHTTPClient(false)
		var mu sync.Mutex
		var body string
		t := runLoad(ctx, mtlsRequests, 4, func(ctx context.Context) result {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+o.addr+"/hello", nil)
			if err != nil {
				return result{err: err}
			}
			req.Host = "echo.demo"
			resp, err := c.Do(req)
			if err != nil {
				return result{err: err}
			}
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
			resp.Body.Close()
			if resp.StatusCode != o.want {
				return result{err: fmt.Errorf("status %d %q, want %d", resp.StatusCode, b, o.want)}
			}
			mu.Lock()
			body = strings.TrimSpace(string(b))
			mu.Unlock()
			return result{outcome: fmt.Sprint(resp.StatusCode), version: resp.Header.Get(echo.HeaderVersion)}
		})
		c.CloseIdleConnections()
		failed += t.failed
		got := t.byOutcome[fmt.Sprint(o.want)]
		line := fmt.Sprintf("    caller %-12s %d on %d of %d requests", o.name, o.want, got, mtlsRequests)
		if o.want == http.StatusOK {
			line += fmt.Sprintf(" (echo %s answered)", strings.Join(sortedKeys(t.byVersion), ","))
		} else {
			line += fmt.Sprintf(", body %q", body)
		}
		if t.failed > 0 {
			line += fmt.Sprintf("; %d failed, first: %v", t.failed, t.firstErr)
		}
		d.say("%s", line)
	}

	// A request's record reaches the sink just after its response was
	// written, so the last ones may still be on their way: wait for them,
	// briefly.
	want := func() bool {
		sink.mu.Lock()
		defer sink.mu.Unlock()
		return sink.codes[demoID(demoAllowedSA).String()][http.StatusOK] >= mtlsRequests &&
			sink.codes[demoID(demoDeniedSA).String()][http.StatusForbidden] >= mtlsRequests
	}
	for deadline := time.Now().Add(2 * time.Second); !want() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	d.say("    the server proxy saw these peer identities:")
	sink.mu.Lock()
	peers := sortedKeys(sink.codes)
	for _, p := range peers {
		codes := sink.codes[p]
		parts := make([]string, 0, len(codes))
		for _, c := range sortedCodes(codes) {
			parts = append(parts, fmt.Sprintf("%d x%d", c, codes[c]))
		}
		name := p
		if name == "" {
			name = "(no client certificate)"
		}
		d.say("      %-44s %s", name, strings.Join(parts, ", "))
	}
	seenAllowed := sink.codes[demoID(demoAllowedSA).String()][http.StatusOK]
	seenDenied := sink.codes[demoID(demoDeniedSA).String()][http.StatusForbidden]
	sink.mu.Unlock()
	if seenAllowed != mtlsRequests || seenDenied != mtlsRequests {
		return failed, fmt.Errorf("mtls: the server proxy recorded %d allowed and %d denied requests by peer identity, want %d each",
			seenAllowed, seenDenied, mtlsRequests)
	}
	return failed, nil
}

// plainGet sends one plaintext HTTP request to addr on a new connection.
func plainGet(ctx context.Context, addr string) (int, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer c.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/hello", nil)
	if err != nil {
		return 0, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// shortErr is the innermost error text (url.Error and friends wrap it
// with the request line).
func shortErr(err error) string {
	for {
		u := errors.Unwrap(err)
		if u == nil {
			return err.Error()
		}
		err = u
	}
}

// sortedCodes returns the status codes of m in order.
func sortedCodes(m map[int]int) []int {
	codes := make([]int, 0, len(m))
	for c := range m {
		codes = append(codes, c)
	}
	sort.Ints(codes)
	return codes
}
