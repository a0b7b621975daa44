package identity

import (
	"crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func setSecrets(store *state.Store, secrets ...*state.Secret) {
	store.Update(func(n *state.Snapshot) bool {
		for _, s := range secrets {
			n.Secrets[s.Name] = s
		}
		return true
	})
}

func TestSDSSourceFollowsStore(t *testing.T) {
	ca, _ := NewEphemeralCA()
	id := ID{"td", "ns", "sa"}
	first := mustIssue(t, ca, id)
	c1, k1 := pemFiles(t, first)
	store := state.NewStore()
	src := NewSDSSource(store, state.SecretDefault, state.SecretRootCA)

	if _, err := src.Certificate(); !errors.Is(err, ErrSecretNotReady) || !strings.Contains(err.Error(), `"default"`) {
		t.Fatalf("Certificate before SDS = %v, want ErrSecretNotReady naming the secret", err)
	}
	setSecrets(store,
		&state.Secret{Name: state.SecretDefault, CertChainPEM: c1, KeyPEM: k1},
		&state.Secret{Name: state.SecretRootCA, TrustedCAPEM: ca.RootPEM()})
	got, err := src.Certificate()
	if err != nil || !got.Leaf.Equal(first.Leaf) {
		t.Fatalf("Certificate = %v, %v", got, err)
	}
	if again, _ := src.Certificate(); again != got {
		t.Error("an unchanged secret was parsed again")
	}
	if r, err := src.Roots(); err != nil || !r.Equal(ca.Roots()) {
		t.Fatalf("Roots = %v, %v", r, err)
	}

	// Rotation is a secret update.
	second := mustIssue(t, ca, id)
	c2, k2 := pemFiles(t, second)
	setSecrets(store, &state.Secret{Name: state.SecretDefault, CertChainPEM: c2, KeyPEM: k2})
	if got, _ := src.Certificate(); !got.Leaf.Equal(second.Leaf) {
		t.Fatal("Certificate did not follow the secret update")
	}

	// A broken secret is reported with its name.
	setSecrets(store, &state.Secret{Name: state.SecretDefault, CertChainPEM: c2, KeyPEM: k1})
	if _, err := src.Certificate(); err == nil || !strings.Contains(err.Error(), `sds secret "default"`) {
		t.Fatalf("mismatched key: %v", err)
	}
}

func TestSourceForSDS(t *testing.T) {
	ca, _ := NewEphemeralCA()
	other, _ := NewEphemeralCA()
	id := ID{"td", "ns", "sa"}
	sdsCert := mustIssue(t, ca, id)
	c, k := pemFiles(t, sdsCert)
	store := state.NewStore()
	setSecrets(store,
		&state.Secret{Name: "default", CertChainPEM: c, KeyPEM: k},
		&state.Secret{Name: "ROOTCA", TrustedCAPEM: ca.RootPEM()})
	localCert := mustIssue(t, other, id)
	local := Static{Cert: localCert, Pool: other.Roots()}

	tests := []struct {
		name      string
		ref       state.SDSRef
		local     Source
		wantCert  *tls.Certificate
		wantRoots *CA
		wantErr   bool
	}{
		{"both over ADS", state.SDSRef{Certificate: "default", Validation: "ROOTCA"}, nil, sdsCert, ca, false},
		{"agent names use the local source", state.SDSRef{Certificate: "default", Validation: "ROOTCA", Agent: true}, local, localCert, other, false},
		{"cert over ADS, roots local", state.SDSRef{Certificate: "default"}, local, sdsCert, other, false},
		{"agent without a local source", state.SDSRef{Certificate: "default", Agent: true}, nil, nil, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := SourceForSDS(store, tt.ref, tt.local)
			cert, err := src.Certificate()
			if tt.wantErr {
				if err == nil {
					t.Fatal("want an error")
				}
				return
			}
			if err != nil || !cert.Leaf.Equal(tt.wantCert.Leaf) {
				t.Fatalf("Certificate = %v, %v", cert, err)
			}
			if r, err := src.Roots(); err != nil || !r.Equal(tt.wantRoots.Roots()) {
				t.Fatalf("Roots = %v, %v", r, err)
			}
		})
	}
}

// TestSDSMutualTLS runs a handshake whose both sides take their material
// from SDS secrets, the end-to-end use of the decoded references.
func TestSDSMutualTLS(t *testing.T) {
	ca, _ := NewEphemeralCA()
	store := state.NewStore()
	srvID, cliID := ID{"td", "ns", "server"}, ID{"td", "ns", "client"}
	sc, sk := pemFiles(t, mustIssue(t, ca, srvID))
	cc, ck := pemFiles(t, mustIssue(t, ca, cliID))
	setSecrets(store,
		&state.Secret{Name: "server", CertChainPEM: sc, KeyPEM: sk},
		&state.Secret{Name: "client", CertChainPEM: cc, KeyPEM: ck},
		&state.Secret{Name: "ROOTCA", TrustedCAPEM: ca.RootPEM()})
	srv := SourceForSDS(store, state.SDSRef{Certificate: "server", Validation: "ROOTCA"}, nil)
	cli := SourceForSDS(store, state.SDSRef{Certificate: "client", Validation: "ROOTCA"}, nil)
	ss, _, serr, cerr := handshake(t, ServerConfig(srv, MatchID(cliID)), ClientConfig(cli, MatchID(srvID)))
	if serr != nil || cerr != nil {
		t.Fatalf("server %v, client %v", serr, cerr)
	}
	if id, _ := PeerID(ss); id != cliID {
		t.Fatalf("server sees %v", id)
	}
}

// TestSDSTrustDepth: a validation secret's max_verify_depth comes with its
// bundle, follows secret updates, and is nil where the bundle is not an
// SDS secret (the local Source behind an agent reference).
func TestSDSTrustDepth(t *testing.T) {
	ca, _ := NewEphemeralCA()
	store := state.NewStore()
	u32 := func(v uint32) *uint32 { return &v }
	ads := TrustOf(SourceForSDS(store, state.SDSRef{Validation: "ca"}, nil))
	agent := TrustOf(SourceForSDS(store, state.SDSRef{Validation: state.SecretRootCA, Agent: true}, Static{Pool: ca.Roots()}))

	if _, _, err := ads(); !errors.Is(err, ErrSecretNotReady) {
		t.Fatalf("Trust before SDS: %v, want ErrSecretNotReady", err)
	}
	for _, depth := range []*uint32{u32(0), u32(3), nil} {
		setSecrets(store, &state.Secret{Name: "ca", TrustedCAPEM: ca.RootPEM(), MaxVerifyDepth: depth})
		pool, got, err := ads()
		if err != nil || !pool.Equal(ca.Roots()) {
			t.Fatalf("Trust = %v, %v", pool, err)
		}
		if (got == nil) != (depth == nil) || got != nil && *got != *depth {
			t.Fatalf("depth = %v, want %v", got, depth)
		}
	}
	if pool, depth, err := agent(); err != nil || !pool.Equal(ca.Roots()) || depth != nil {
		t.Fatalf("agent Trust = %v, %v, %v; want the local roots and no depth", pool, depth, err)
	}
}
