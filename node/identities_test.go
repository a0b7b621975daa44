package node

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshlet/meshlet/identity"
)

// The node asks an Istio CA for each workload's certificate with
// ImpersonatedIdentity; a CA that does not let the node impersonate
// refuses, and the failure is not cached.
func TestIstioCAIdentities(t *testing.T) {
	ca, err := identity.NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	nodeID := identity.ID{TrustDomain: "cluster.local", Namespace: "istio-system", ServiceAccount: "ztunnel"}
	allow := true
	srv := &identity.CAServer{
		CA:             ca,
		Authenticate:   func(context.Context, string) (identity.ID, error) { return nodeID, nil },
		CanImpersonate: func(caller identity.ID) bool { return allow && caller == nodeID },
	}
	gs := grpc.NewServer()
	srv.Register(gs)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(ln) }()
	defer func() { gs.Stop(); <-done }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("node-token"), 0o600); err != nil {
		t.Fatal(err)
	}
	ids := NewIstioCAIdentities(identity.NewIstioCAClient(conn, tok), time.Hour)
	defer ids.Close()

	web := identity.ID{TrustDomain: "cluster.local", Namespace: "default", ServiceAccount: "web"}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	allow = false
	if _, err := ids.Source(ctx, web); err == nil {
		t.Fatal("CA refusing impersonation still issued")
	}
	if ids.Len() != 0 {
		t.Fatal("failed fetch was cached")
	}
	allow = true
	src, err := ids.Source(ctx, web)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := src.Certificate()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := identity.FromCert(cert.Leaf); err != nil || got != web {
		t.Fatalf("certificate is for %v (%v), want %v", got, err, web)
	}
}
