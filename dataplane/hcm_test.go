package dataplane

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meshlet/meshlet/dataplane/httpproxy"
	"github.com/meshlet/meshlet/dataplane/upstream"
	"github.com/meshlet/meshlet/state"
)

// newHTTPEnv is newEnv with the real HTTP connection manager wired in.
func newHTTPEnv(t *testing.T, opts Options) *env {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	opts.Log = log
	store := state.NewStore()
	mgr := upstream.NewManager(store, log)
	hp := httpproxy.New(store, mgr, httpproxy.Options{}, log)
	srv := New(store, mgr, hp, opts)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		mgr.Close()
	})
	return &env{t: t, store: store, clusters: mgr, srv: srv}
}

func httpBackend(t *testing.T, tag string) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s", tag, r.URL.Path)
	})}
	// Serve HTTP/1.1 and h2c prior knowledge.
	hs.Protocols = new(http.Protocols)
	hs.Protocols.SetHTTP1(true)
	hs.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return ln.Addr().String()
}

func hcmChain(name, cluster string) *state.FilterChain {
	return &state.FilterChain{Name: name, HTTP: &state.HTTPConnectionManager{
		StatPrefix: name,
		RouteConfig: &state.RouteConfig{Name: "rc", VirtualHosts: []*state.VirtualHost{{
			Name: "all", Domains: []string{"*"},
			Routes: []*state.Route{{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/", CaseSensitive: true},
				Action: &state.RouteAction{Cluster: cluster, Timeout: 5 * time.Second}}},
		}}},
		HTTPFilters: []string{"envoy.filters.http.router"},
	}}
}

// TestHCMDispatch: HTTP chains go to httpproxy.ServeConn, with and without
// TLS termination, selected by the HTTP inspector next to a TCP chain.
func TestHCMDispatch(t *testing.T) {
	e := newHTTPEnv(t, Options{})
	web := httpBackend(t, "web")
	e.cluster("web", web)
	// HTTP/2 downstream goes to an HTTP/2 upstream: this test is about
	// dispatch and the TLS state handed to the HTTP layer, not protocol
	// translation.
	e.cluster("web2", web)
	e.store.Update(func(n *state.Snapshot) bool {
		c := *n.Clusters["web2"]
		c.Protocol = state.UpstreamUseDownstream
		n.Clusters["web2"] = &c
		return true
	})
	e.cluster("raw", startBackend(t, greet("raw|")))
	front := newCert(t, "front.test")
	plain := hcmChain("http", "web")
	plain.Match.ApplicationProtocols = []string{"http/1.1"}
	secure := hcmChain("https", "web2")
	secure.Match.TransportProtocol = "tls"
	secure.TLS = &state.DownstreamTLS{CertChainPEM: front.certPEM, KeyPEM: front.keyPEM}
	l := tcpListener("l", plain, secure)
	l.DefaultFilterChain = tcpChain("raw", "raw")
	e.listener(l)
	addr := e.addr("l")

	t.Run("http/1.1", func(t *testing.T) {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("http://" + addr + "/plain")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "web /plain" {
			t.Fatalf("got %d %q", resp.StatusCode, body)
		}
	})
	for _, proto := range []string{"http/1.1", "h2"} {
		t.Run("tls "+proto, func(t *testing.T) {
			tr := &http.Transport{TLSClientConfig: &tls.Config{ServerName: "front.test", RootCAs: front.pool, NextProtos: []string{proto}},
				ForceAttemptHTTP2: proto == "h2"}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get("https://" + addr + "/secure")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantMajor := 1
			if proto == "h2" {
				wantMajor = 2
			}
			if resp.StatusCode != 200 || string(body) != "web /secure" || resp.ProtoMajor != wantMajor {
				t.Fatalf("got %s %d %q", resp.Proto, resp.StatusCode, body)
			}
		})
	}
	t.Run("non-http falls to tcp default", func(t *testing.T) {
		roundTrip(t, dial(t, addr), "hi\n", "raw|hi\n")
	})
}

// TestHCMDrainOnRemoval: removing a listener cancels the context given to
// ServeConn, so an idle keep-alive HTTP/1.1 connection ends long before the
// drain timeout would force it.
func TestHCMDrainOnRemoval(t *testing.T) {
	e := newHTTPEnv(t, Options{DrainTimeout: 10 * time.Second})
	e.cluster("web", httpBackend(t, "web"))
	e.listener(tcpListener("l", hcmChain("http", "web")))
	c := dial(t, e.addr("l"))
	req := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 200") {
		t.Fatalf("response %q, %v", buf[:n], err)
	}
	e.removeListener("l")
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := c.Read(buf); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("idle HTTP connection not closed on drain")
			}
			break
		}
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("closed after %v", d)
	}
}
