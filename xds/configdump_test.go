package xds

import (
	"strings"
	"testing"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	listener "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshlet/meshlet/state"
)

// TestConfigDump: the dump holds the accepted resources as sent, in
// Envoy's ConfigDump shape, with private keys redacted, and follows
// updates and removals.
func TestConfigDump(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			cp := startControlPlane(t, "127.0.0.1:0")
			cp.set("1", resources(
				sdsListener("in", 8001, "c1"), edsCluster("c1"), assignment("c1", 9001),
				certSecret(state.SecretDefault, "chain-1"), caSecret(state.SecretRootCA, "root-1"),
			))
			h := startClient(t, cp, m.delta, nil, nil)
			waitReady(t, h.c)

			dump := h.c.ConfigDump()
			b, err := protojson.Marshal(dump)
			if err != nil {
				t.Fatal(err)
			}
			js := string(b)
			if strings.Contains(js, "key-chain-1") {
				t.Errorf("dump leaks the private key:\n%s", js)
			}
			var back adminv3.ConfigDump
			if err := protojson.Unmarshal(b, &back); err != nil {
				t.Fatalf("dump does not parse as ConfigDump: %v", err)
			}
			if len(back.Configs) != 5 {
				t.Fatalf("configs = %d, want 5", len(back.Configs))
			}
			var lds adminv3.ListenersConfigDump
			if err := back.Configs[0].UnmarshalTo(&lds); err != nil {
				t.Fatal(err)
			}
			if len(lds.DynamicListeners) != 1 || lds.DynamicListeners[0].Name != "in" {
				t.Fatalf("listeners = %v", lds.DynamicListeners)
			}
			var l listener.Listener
			if err := lds.DynamicListeners[0].ActiveState.Listener.UnmarshalTo(&l); err != nil || l.Name != "in" {
				t.Errorf("listener = %v, %v", &l, err)
			}
			if lds.DynamicListeners[0].ActiveState.VersionInfo == "" || lds.DynamicListeners[0].ActiveState.LastUpdated == nil {
				t.Errorf("listener state lacks version or last_updated: %v", lds.DynamicListeners[0].ActiveState)
			}
			var sds adminv3.SecretsConfigDump
			if err := back.Configs[4].UnmarshalTo(&sds); err != nil {
				t.Fatal(err)
			}
			found := false
			for _, s := range sds.DynamicActiveSecrets {
				if s.Name != state.SecretDefault {
					continue
				}
				found = true
				var sec tlsv3.Secret
				if err := s.Secret.UnmarshalTo(&sec); err != nil {
					t.Fatal(err)
				}
				if got := sec.GetTlsCertificate().GetPrivateKey().GetInlineString(); got != "[redacted]" {
					t.Errorf("private key = %q, want [redacted]", got)
				}
				if got := sec.GetTlsCertificate().GetCertificateChain().GetInlineString(); got != "chain-1" {
					t.Errorf("chain = %q, want it kept", got)
				}
			}
			if !found {
				t.Errorf("secret %q missing: %v", state.SecretDefault, sds.DynamicActiveSecrets)
			}
			var cds adminv3.ClustersConfigDump
			var eds adminv3.EndpointsConfigDump
			_ = back.Configs[1].UnmarshalTo(&cds)
			_ = back.Configs[3].UnmarshalTo(&eds)
			if len(cds.DynamicActiveClusters) != 1 || len(eds.DynamicEndpointConfigs) != 1 {
				t.Errorf("clusters %d endpoints %d, want 1 and 1", len(cds.DynamicActiveClusters), len(eds.DynamicEndpointConfigs))
			}
		})
	}
}
