package integration

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// startGRPCBackend runs the gRPC interop TestService; every response carries
// header metadata x-backend: name.
func startGRPCBackend(t *testing.T, name string) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			_ = grpc.SetHeader(ctx, metadata.Pairs("x-backend", name))
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			_ = ss.SetHeader(metadata.Pairs("x-backend", name))
			return h(srv, ss)
		}),
	)
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

func grpcRoute(prefix, cluster string) *routev3.Route {
	r := routeTo(cluster)
	r.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: prefix}
	r.GetRoute().Timeout = durationpb.New(0)
	return r
}

// TestGRPCInterop runs the gRPC interop client's standard cases through the
// proxy to the interop server, over an HTTP/2 upstream cluster.
func TestGRPCInterop(t *testing.T) {
	cp := startControlPlane(t)
	g1 := startGRPCBackend(t, "g1")
	g2 := startGRPCBackend(t, "g2")
	listener := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	// gRPC method routing: UnaryCall goes to g2, everything else to g1.
	cp.set(
		httpListener(t, "grpc", listener, "grpc"),
		routeConfig("grpc",
			grpcRoute("/grpc.testing.TestService/UnaryCall", "g2"),
			grpcRoute("/grpc.testing.TestService/", "g1"),
		),
		edsCluster("g1", clusterv3.Cluster_ROUND_ROBIN, true),
		edsCluster("g2", clusterv3.Cluster_ROUND_ROBIN, true),
		endpoints(t, "g1", g1),
		endpoints(t, "g2", g2),
	)
	startProxy(t, cp, proxyOpts{})
	cc, err := grpc.NewClient(listener, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	tc := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eventually(t, 10*time.Second, func() error {
		_, err := tc.EmptyCall(ctx, &testgrpc.Empty{})
		return err
	})

	var hdr metadata.MD
	if _, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get("x-backend"); len(got) != 1 || got[0] != "g2" {
		t.Errorf("UnaryCall routed to %v, want g2 (method route)", got)
	}
	hdr = nil
	if _, err := tc.EmptyCall(ctx, &testgrpc.Empty{}, grpc.Header(&hdr)); err != nil {
		t.Fatal(err)
	}
	if got := hdr.Get("x-backend"); len(got) != 1 || got[0] != "g1" {
		t.Errorf("EmptyCall routed to %v, want g1", got)
	}

	// The interop cases (they call Fatal on failure).
	cases := []struct {
		name string
		fn   func(context.Context, testgrpc.TestServiceClient, ...grpc.CallOption)
	}{
		{"empty_unary", interop.DoEmptyUnaryCall},
		{"large_unary", interop.DoLargeUnaryCall},
		{"client_streaming", interop.DoClientStreaming},
		{"server_streaming", interop.DoServerStreaming},
		{"ping_pong", interop.DoPingPong},
		{"empty_stream", interop.DoEmptyStream},
		{"custom_metadata", interop.DoCustomMetadata},
		{"status_code_and_message", interop.DoStatusCodeAndMessage},
		{"special_status_message", interop.DoSpecialStatusMessage},
		{"timeout_on_sleeping_server", interop.DoTimeoutOnSleepingServer},
		{"cancel_after_begin", interop.DoCancelAfterBegin},
		{"cancel_after_first_response", interop.DoCancelAfterFirstResponse},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.fn(ctx, tc)
		})
	}

	// Unknown service: no route matches -> gRPC UNIMPLEMENTED from the proxy.
	err = cc.Invoke(ctx, "/other.Service/Method", &testgrpc.Empty{}, &testgrpc.Empty{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("unrouted gRPC method: %v, want Unimplemented", err)
	}
}
