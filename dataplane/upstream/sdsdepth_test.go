package upstream

import (
	"fmt"
	"strings"
	"testing"

	"github.com/meshlet/meshlet/state"
)

// TestSDSMaxVerifyDepth: max_verify_depth in an SDS validation secret is
// enforced like the inline one; when both are set the secret's wins (Envoy
// merges it over the combined context's default), and a secret update
// changes it for the next handshake without a cluster update.
func TestSDSMaxVerifyDepth(t *testing.T) {
	root := newRootCA(t)
	addr := tlsServer(t, root.intermediate(t).leaf(t, "a.example")) // depth 2
	u32 := func(v uint32) *uint32 { return &v }
	show := func(d *uint32) string {
		if d == nil {
			return "unset"
		}
		return fmt.Sprint(*d)
	}
	store := state.NewStore()
	setCA := func(depth *uint32) {
		store.Update(func(n *state.Snapshot) bool {
			n.Secrets["ca"] = &state.Secret{Name: "ca", TrustedCAPEM: root.pem(), MaxVerifyDepth: depth}
			return true
		})
	}
	for _, tc := range []struct {
		secret, context *uint32
		wantErr         bool
	}{
		{nil, nil, false},
		{u32(1), nil, true},
		{u32(2), nil, false},
		{nil, u32(1), true},
		{u32(2), u32(1), false},
		{u32(1), u32(9), true},
	} {
		setCA(tc.secret)
		cfg, err := clientTLS(&state.UpstreamTLS{SDS: state.SDSRef{Validation: "ca"}, Params: state.TLSParams{MaxVerifyDepth: tc.context}}, Identity{Store: store})
		if err != nil {
			t.Fatal(err)
		}
		err = handshake(t, cfg, addr)
		if (err != nil) != tc.wantErr || err != nil && !strings.Contains(err.Error(), "max_verify_depth") {
			t.Errorf("secret depth %s, context depth %s: handshake err %v, want error %v", show(tc.secret), show(tc.context), err, tc.wantErr)
		}
	}

	setCA(u32(1))
	cfg, err := clientTLS(&state.UpstreamTLS{SDS: state.SDSRef{Validation: "ca"}}, Identity{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	if err := handshake(t, cfg, addr); err == nil {
		t.Fatal("depth 1 secret: handshake succeeded")
	}
	setCA(u32(2))
	if err := handshake(t, cfg, addr); err != nil {
		t.Fatalf("after the secret raised its depth to 2: %v", err)
	}
}
