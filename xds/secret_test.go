package xds

import (
	"slices"
	"strings"
	"testing"

	core "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshlet/meshlet/state"
)

// sdsListener is tcpListener terminating mTLS with Istio's SDS names
// delivered over ADS.
func sdsListener(name string, port uint32, cluster string) *listener.Listener {
	l := tcpListener(name, port, cluster)
	ctx := &tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: state.SecretDefault, SdsConfig: ads()}},
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: state.SecretRootCA, SdsConfig: ads()},
		}},
	}}
	l.FilterChains[0].TransportSocket = &core.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &core.TransportSocket_TypedConfig{TypedConfig: mustAny(ctx)}}
	return l
}

func certSecret(name, chain string) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: chain}},
		PrivateKey:       &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: "key-" + chain}},
	}}}
}

func caSecret(name, ca string) *tlsv3.Secret {
	return &tlsv3.Secret{Name: name, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &core.DataSource{Specifier: &core.DataSource_InlineString{InlineString: ca}},
	}}}
}

// TestSDSSecrets covers SDS over the ADS stream: the secrets a listener's
// TLS context names are subscribed to, arrive in the store before Ready,
// follow updates, and go away with the last reference, while a configured
// name stays subscribed regardless.
func TestSDSSecrets(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cp := startControlPlane(t, "127.0.0.1:0")
			cp.set("1", resources(
				sdsListener("in", 8001, "c1"), edsCluster("c1"), assignment("c1", 9001),
				certSecret(state.SecretDefault, "chain-1"), caSecret(state.SecretRootCA, "root-1"),
				caSecret("extra", "extra-ca"),
			))
			h := startClient(t, cp, m.delta, nil, func(c *Client) { c.cfg.Secrets = []string{"extra"} })
			waitReady(t, h.c)

			snap := h.store.Load()
			if got, want := keys(snap.Secrets), []string{state.SecretRootCA, "default", "extra"}; !slices.Equal(got, want) {
				t.Fatalf("secrets = %v, want %v", got, want)
			}
			if d := snap.Secrets[state.SecretDefault]; string(d.CertChainPEM) != "chain-1" || string(d.KeyPEM) != "key-chain-1" {
				t.Errorf("default secret = %+v", d)
			}
			if r := snap.Secrets[state.SecretRootCA]; string(r.TrustedCAPEM) != "root-1" {
				t.Errorf("ROOTCA secret = %+v", r)
			}
			if ref := snap.Listeners["in"].FilterChains[0].TLS.SDS; ref != (state.SDSRef{Certificate: "default", Validation: "ROOTCA"}) {
				t.Errorf("listener SDS ref = %+v", ref)
			}
			checkSubscribed(t, cp, m.delta, state.TypeSecret, []string{state.SecretRootCA, "default", "extra"})

			// Rotation: a new certificate under the same name.
			cp.set("2", resources(
				sdsListener("in", 8001, "c1"), edsCluster("c1"), assignment("c1", 9001),
				certSecret(state.SecretDefault, "chain-2"), caSecret(state.SecretRootCA, "root-1"), caSecret("extra", "extra-ca"),
			))
			waitFor(t, "rotated default secret", func() bool {
				d := h.store.Load().Secrets[state.SecretDefault]
				return d != nil && string(d.CertChainPEM) == "chain-2"
			})

			// The listener goes: its secrets go with it, "extra" stays.
			// (go-control-plane's ADS mode answers only requests that name
			// every secret in the snapshot, so the snapshot drops them too.)
			cp.set("3", resources(edsCluster("c1"), assignment("c1", 9001), caSecret("extra", "extra-ca")))
			waitFor(t, "secrets pruned", func() bool {
				return slices.Equal(keys(h.store.Load().Secrets), []string{"extra"})
			})
			checkSubscribed(t, cp, m.delta, state.TypeSecret, []string{"extra"})
			if msgs := cp.nackMessages(); len(msgs) > 0 {
				t.Errorf("NACKs: %v", msgs)
			}
		})
	}
}

// TestSDSSecretNACK rejects an invalid secret and keeps the last good one.
func TestSDSSecretNACK(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cp := startControlPlane(t, "127.0.0.1:0")
			cp.set("1", resources(sdsListener("in", 8001, "c1"), edsCluster("c1"), assignment("c1", 9001),
				certSecret(state.SecretDefault, "chain-1"), caSecret(state.SecretRootCA, "root-1")))
			h := startClient(t, cp, m.delta, nil, nil)
			waitReady(t, h.c)
			bad := certSecret(state.SecretDefault, "chain-2")
			bad.GetTlsCertificate().PrivateKey = nil
			cp.set("2", resources(sdsListener("in", 8001, "c1"), edsCluster("c1"), assignment("c1", 9001),
				bad, caSecret(state.SecretRootCA, "root-1")))
			waitFor(t, "a NACK", func() bool { return len(cp.nackMessages()) > 0 })
			if msg := cp.nackMessages()[0]; !containsAll(msg, `secret "default"`, "private_key") {
				t.Errorf("NACK %q does not name the secret and field", msg)
			}
			if d := h.store.Load().Secrets[state.SecretDefault]; d == nil || string(d.CertChainPEM) != "chain-1" {
				t.Errorf("default secret after NACK = %+v, want the last good one", d)
			}
		})
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
