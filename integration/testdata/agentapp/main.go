// Command agentapp is the proxyless gRPC application of the agent
// integration test (integration/agent_test.go) and bench/agent.sh: a
// grpc-go xDS server or client configured only by the bootstrap named in
// GRPC_XDS_BOOTSTRAP, with xDS (mTLS) credentials.
//
//	agentapp server -addr 127.0.0.1:PORT
//	agentapp client -target xds:///NAME [-every 50ms]
//
// The server answers UnaryCall with the caller's SPIFFE ID and certificate
// serial in headers; the client calls in a loop and prints one line per
// call until SIGTERM or SIGINT, then exits 0.
package main

import (
	"context"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: agentapp server|client [flags]")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch os.Args[1] {
	case "server":
		err = server(ctx, os.Args[2:])
	case "client":
		err = client(ctx, os.Args[2:])
	default:
		err = fmt.Errorf("unknown mode %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "agentapp:", err)
		os.Exit(1)
	}
}

// peerCert is the leaf certificate the other side presented, if any.
func peerCert(p *peer.Peer) *x509.Certificate {
	if p == nil {
		return nil
	}
	if ti, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(ti.State.PeerCertificates) > 0 {
		return ti.State.PeerCertificates[0]
	}
	return nil
}

func spiffeOf(c *x509.Certificate) string {
	if c == nil || len(c.URIs) == 0 {
		return "none"
	}
	return c.URIs[0].String()
}

func serialOf(c *x509.Certificate) string {
	if c == nil {
		return "none"
	}
	return c.SerialNumber.Text(16)
}

type testServer struct {
	testgrpc.UnimplementedTestServiceServer
}

func (testServer) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	p, _ := peer.FromContext(ctx)
	c := peerCert(p)
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-peer-spiffe", spiffeOf(c), "x-peer-serial", serialOf(c)))
	return &testgrpc.SimpleResponse{}, nil
}

func server(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:0", "listen address")
	maxAge := fs.Duration("max-connection-age", 0, "close connections after this long (makes clients handshake again)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	opts := []grpc.ServerOption{
		grpc.Creds(creds),
		xds.ServingModeCallback(func(addr net.Addr, a xds.ServingModeChangeArgs) {
			fmt.Printf("SERVING addr=%s mode=%s err=%v\n", addr, a.Mode, a.Err)
		}),
	}
	if *maxAge > 0 {
		opts = append(opts, grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: *maxAge, MaxConnectionAgeGrace: 10 * time.Second}))
	}
	s, err := xds.NewGRPCServer(opts...)
	if err != nil {
		return err
	}
	testgrpc.RegisterTestServiceServer(s, testServer{})
	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		s.Stop()
	}()
	fmt.Printf("LISTENING addr=%s\n", lis.Addr())
	if err := s.Serve(lis); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

func client(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("client", flag.ContinueOnError)
	target := fs.String("target", "", "xds:///NAME")
	every := fs.Duration("every", 50*time.Millisecond, "time between calls")
	timeout := fs.Duration("timeout", 5*time.Second, "per-call deadline")
	if err := fs.Parse(args); err != nil {
		return err
	}
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	cc, err := grpc.NewClient(*target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer cc.Close()
	tc := testgrpc.NewTestServiceClient(cc)
	t := time.NewTicker(*every)
	defer t.Stop()
	// Calls wait for the channel until the first one succeeds (resources
	// and certificates arriving); after that they fail fast, so a broken
	// handshake or a lost route shows as a failed call, not a wait.
	ok := false
	for seq := 0; ; seq++ {
		cctx, cancel := context.WithTimeout(ctx, *timeout)
		var hdr metadata.MD
		var p peer.Peer
		_, err := tc.UnaryCall(cctx, &testgrpc.SimpleRequest{}, grpc.Header(&hdr), grpc.Peer(&p), grpc.WaitForReady(!ok))
		cancel()
		ok = ok || err == nil
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			fmt.Printf("RPC seq=%d code=%s err=%q\n", seq, status.Code(err), err)
		} else {
			sc := peerCert(&p)
			fmt.Printf("RPC seq=%d code=OK server=%s server_serial=%s peer_seen=%s peer_serial_seen=%s\n", seq,
				spiffeOf(sc), serialOf(sc), first(hdr.Get("x-peer-spiffe")), first(hdr.Get("x-peer-serial")))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func first(v []string) string {
	if len(v) == 0 {
		return "none"
	}
	return v[0]
}
