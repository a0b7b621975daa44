package upstream

import (
	"crypto/x509"
	"net"
	"net/url"
	"regexp"
	"testing"

	"github.com/meshlet/meshlet/lb"
	"github.com/meshlet/meshlet/state"
)

func TestMatchSANs(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://cluster.local/ns/default/sa/server")
	leaf := &x509.Certificate{
		URIs:        []*url.URL{spiffe},
		DNSNames:    []string{"*.example.com", "api.internal"},
		IPAddresses: []net.IP{net.ParseIP("10.0.0.1")},
	}
	exact := func(typ state.SANType, v string) state.SANMatcher {
		return state.SANMatcher{Type: typ, Match: state.StringMatcher{Kind: state.StringExact, Value: v}}
	}
	for _, tc := range []struct {
		name string
		ms   []state.SANMatcher
		ok   bool
	}{
		{"no matchers", nil, true},
		{"spiffe uri", []state.SANMatcher{exact(state.SANURI, spiffe.String())}, true},
		{"other spiffe uri", []state.SANMatcher{exact(state.SANURI, "spiffe://cluster.local/ns/default/sa/other")}, false},
		{"uri matcher does not see dns", []state.SANMatcher{exact(state.SANURI, "api.internal")}, false},
		{"dns exact", []state.SANMatcher{exact(state.SANDNS, "api.internal")}, true},
		{"dns under wildcard", []state.SANMatcher{exact(state.SANDNS, "foo.example.com")}, true},
		{"wildcard is one label", []state.SANMatcher{exact(state.SANDNS, "a.foo.example.com")}, false},
		{"ip", []state.SANMatcher{exact(state.SANIP, "10.0.0.1")}, true},
		{"deprecated form matches any type", []state.SANMatcher{exact(state.SANAny, spiffe.String())}, true},
		{"any one of several", []state.SANMatcher{exact(state.SANURI, "spiffe://x/ns/a/sa/b"), exact(state.SANDNS, "api.internal")}, true},
		{"prefix", []state.SANMatcher{{Type: state.SANURI, Match: state.StringMatcher{Kind: state.StringPrefix, Value: "spiffe://cluster.local/ns/default/"}}}, true},
		{"regex", []state.SANMatcher{{Type: state.SANURI, Match: state.StringMatcher{Kind: state.StringRegex, Regex: regexp.MustCompile(`^spiffe://cluster\.local/ns/[^/]+/sa/server$`)}}}, true},
		{"ignore case", []state.SANMatcher{{Type: state.SANDNS, Match: state.StringMatcher{Kind: state.StringExact, Value: "API.internal", IgnoreCase: true}}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := MatchSANs(leaf, tc.ms)
			if (err == nil) != tc.ok {
				t.Fatalf("MatchSANs = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// TestTransportSocketMatches: endpoints labelled tlsMode: istio get the
// matching TLS context; others fall back to the cluster's transport
// socket (here plaintext), as Istio configures auto mTLS.
func TestTransportSocketMatches(t *testing.T) {
	spec := &state.Cluster{
		Name: "c",
		TransportSocketMatches: []state.TransportSocketMatch{
			{Name: "tlsMode-istio", Match: map[string]string{"tlsMode": "istio"}, TLS: &state.UpstreamTLS{SNI: "mesh"}},
			{Name: "tlsMode-disabled", Match: nil, TLS: nil},
		},
	}
	cla := &state.ClusterLoadAssignment{Localities: []state.LocalityEndpoints{{Endpoints: []state.Endpoint{
		{Address: "10.0.0.1:80", TransportSocketMatch: map[string]string{"tlsMode": "istio"}},
		{Address: "10.0.0.2:80"},
		{Address: "10.0.0.3:80", TransportSocketMatch: map[string]string{"tlsMode": "disabled"}},
	}}}}
	ts, errs := compileTransports(spec, cla, Identity{})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for addr, wantSNI := range map[string]string{"10.0.0.1:80": "mesh", "10.0.0.2:80": "", "10.0.0.3:80": ""} {
		cfg := ts.forHost(&lb.Host{Address: addr})
		got := ""
		if cfg != nil {
			got = cfg.ServerName
		}
		if got != wantSNI || (wantSNI == "") != (cfg == nil) {
			t.Errorf("%s: tls %v (sni %q), want sni %q", addr, cfg != nil, got, wantSNI)
		}
	}
	if !ts.anyTLS() {
		t.Error("anyTLS = false with a TLS match")
	}
}

// TestClientTLSSDSFailsClosed: an SDS context whose secrets are missing
// fails the handshake instead of sending plaintext or skipping checks.
func TestClientTLSSDSFailsClosed(t *testing.T) {
	cert, _ := selfSigned(t)
	addr := tlsServer(t, cert)
	cfg, err := clientTLS(&state.UpstreamTLS{SDS: state.SDSRef{Certificate: "default", Validation: "ROOTCA"}}, Identity{Store: state.NewStore()})
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, cfg, addr); err == nil {
		t.Fatal("handshake succeeded without the SDS trust bundle")
	}
}
