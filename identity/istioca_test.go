package identity

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// startCAServer serves a CAServer on loopback. tokens maps bearer tokens
// to the identity they prove; node may impersonate.
func startCAServer(t *testing.T, ca *CA, tokens *tokenSet, node ID) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	(&CAServer{
		CA: ca,
		Authenticate: func(_ context.Context, tok string) (ID, error) {
			if id, ok := tokens.get(tok); ok {
				return id, nil
			}
			return ID{}, errors.New("unknown token")
		},
		CanImpersonate: func(caller ID) bool { return caller == node },
		MaxTTL:         time.Hour,
	}).Register(s)
	go s.Serve(lis)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		s.Stop()
	})
	return conn
}

// tokenSet is the CA server's token table, replaceable while it serves.
type tokenSet struct {
	mu sync.Mutex
	m  map[string]ID
}

func newTokenSet(m map[string]ID) *tokenSet { return &tokenSet{m: m} }

func (s *tokenSet) get(tok string) (ID, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, ok := s.m[tok]
	return id, ok
}

func (s *tokenSet) set(m map[string]ID) {
	s.mu.Lock()
	s.m = m
	s.mu.Unlock()
}

func writeToken(t *testing.T, path, tok string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestIstioCAClientCSRFlow(t *testing.T) {
	ca, err := NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	app := ID{"cluster.local", "default", "app"}
	other := ID{"cluster.local", "default", "other"}
	node := ID{"cluster.local", "istio-system", "ztunnel"}
	conn := startCAServer(t, ca, newTokenSet(map[string]ID{"app-token": app, "node-token": node}), node)
	tokenFile := filepath.Join(t.TempDir(), "token")

	tests := []struct {
		name        string
		token       string // "" leaves no token file configured
		id          ID
		impersonate bool
		wantCode    codes.Code
	}{
		{"own identity", "app-token", app, false, codes.OK},
		{"no token", "", app, false, codes.Unauthenticated},
		{"wrong token", "nope", app, false, codes.Unauthenticated},
		{"someone else's identity", "app-token", other, false, codes.PermissionDenied},
		{"impersonation by a workload", "app-token", other, true, codes.PermissionDenied},
		{"impersonation by the node agent", "node-token", app, true, codes.OK},
		{"node without impersonation metadata", "node-token", app, false, codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := ""
			if tt.token != "" {
				writeToken(t, tokenFile, tt.token)
				file = tokenFile
			}
			c := NewIstioCAClient(conn, file)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			cert, roots, err := c.Sign(ctx, tt.id, 10*time.Minute, tt.impersonate)
			if code := status.Code(errors.Unwrap(err)); err != nil && code != tt.wantCode || err == nil && tt.wantCode != codes.OK {
				t.Fatalf("Sign: %v (code %v), want code %v", err, code, tt.wantCode)
			}
			if tt.wantCode != codes.OK {
				return
			}
			got, err := FromCert(cert.Leaf)
			if err != nil || got != tt.id {
				t.Fatalf("issued for %v, %v; want %v", got, err, tt.id)
			}
			if !roots.Equal(ca.Roots()) {
				t.Error("trust bundle is not the CA's root")
			}
			if life := time.Until(cert.Leaf.NotAfter); life > 10*time.Minute+time.Second || life < 9*time.Minute {
				t.Errorf("lifetime %v, want the requested 10m", life)
			}
		})
	}
}

func TestIstioCASourceRotatesAndRereadsToken(t *testing.T) {
	ca, err := NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	app := ID{"cluster.local", "default", "app"}
	tokens := newTokenSet(map[string]ID{"t1": app})
	conn := startCAServer(t, ca, tokens, ID{})
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeToken(t, tokenFile, "t1")
	src, err := NewIstioCAClient(conn, tokenFile).Source(context.Background(), app, 2*time.Second, false, RotationOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	first, _ := src.Certificate()
	// The kubelet rotates the projected token; the old one stops working.
	writeToken(t, tokenFile, "t2")
	tokens.set(map[string]ID{"t2": app})
	deadline := time.Now().Add(5 * time.Second)
	for src.Rotations() < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := src.Rotations(); n < 2 {
		t.Fatalf("%d rotations in 5s with a 2s certificate, want >= 2", n)
	}
	cur, _ := src.Certificate()
	if cur.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("Certificate() still returns the first certificate")
	}
}
