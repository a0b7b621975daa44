package httpproxy

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/meshlet/meshlet/state"
)

// BenchmarkProxyGRPCUnary measures grpc-go's EmptyCall through the proxy
// (HTTP/2 downstream, the upstream HTTP/2 client to a grpc-go server):
// response headers, a message and trailers per call. allocs/op include
// the gRPC client and server.
func BenchmarkProxyGRPCUnary(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	b.Cleanup(func() { srv.Stop(); <-done })
	e := newH2Env(b, h2EnvOpts{
		clusters: []*state.Cluster{staticCluster("grpc", state.UpstreamHTTP2, ln.Addr().String())},
		rc:       routeAll("grpc"),
	})
	cc, err := grpc.NewClient(e.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cc.Close() })
	client := testgrpc.NewTestServiceClient(cc)
	ctx := context.Background()
	if _, err := client.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
