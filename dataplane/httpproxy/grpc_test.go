package httpproxy

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/meshlet/meshlet/state"
)

// grpcBackend starts grpc-go's interop TestService on loopback.
func grpcBackend(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ln) }()
	t.Cleanup(func() { s.Stop(); <-done })
	return ln.Addr().String()
}

// grpcClient dials addr with plaintext HTTP/2 (prior knowledge).
func grpcClient(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestGRPCInteropThroughProxy runs grpc-go's interop cases with the proxy
// between a real client and a real server. The interop helpers end the
// process on failure, so a failing case fails the whole test binary.
func TestGRPCInteropThroughProxy(t *testing.T) {
	h2LeakCheck(t)
	be := grpcBackend(t)
	for _, tc := range []struct {
		name  string
		codec state.CodecType
		serve h2ServeFunc
	}{
		{"codec http2", state.CodecHTTP2, serveViaH2},
		{"codec auto via ServeConn", state.CodecAuto, serveViaServeConn},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newH2Env(t, h2EnvOpts{
				serve:    tc.serve,
				hcm:      &state.HTTPConnectionManager{Codec: tc.codec},
				clusters: []*state.Cluster{staticCluster("grpc", state.UpstreamHTTP2, be)},
				rc:       routeAll("grpc"),
			})
			cc := grpcClient(t, e.addr)
			tc := testgrpc.NewTestServiceClient(cc)
			cases := []struct {
				name string
				run  func(context.Context, testgrpc.TestServiceClient, ...grpc.CallOption)
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
					ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					defer cancel()
					c.run(ctx, tc)
				})
			}
			t.Run("unimplemented_method", func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				interop.DoUnimplementedMethod(ctx, cc)
			})
		})
	}
}

// TestGRPCLocalReplies: the proxy's own errors reach gRPC clients as gRPC
// statuses (Envoy's HTTP-to-gRPC mapping), not as HTTP errors.
func TestGRPCLocalReplies(t *testing.T) {
	h2LeakCheck(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close()
	rc := &state.RouteConfig{Name: "rc", VirtualHosts: []*state.VirtualHost{{
		Name: "vh", Domains: []string{"*"},
		Routes: []*state.Route{
			{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/grpc.testing.TestService/EmptyCall", CaseSensitive: true}, Action: &state.RouteAction{Cluster: "dead"}},
			{Match: state.RouteMatch{Kind: state.PathPrefix, Path: "/grpc.testing.TestService/UnaryCall", CaseSensitive: true}, Action: &state.RouteAction{Cluster: "empty"}},
		},
	}}}
	e := newH2Env(t, h2EnvOpts{
		clusters: []*state.Cluster{
			staticCluster("dead", state.UpstreamHTTP2, deadAddr),
			staticCluster("empty", state.UpstreamHTTP2),
		},
		rc: rc,
	})
	tc := testgrpc.NewTestServiceClient(grpcClient(t, e.addr))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		name    string
		call    func() error
		code    codes.Code
		message string
	}{
		{"no route is unimplemented", func() error {
			s, err := tc.StreamingInputCall(ctx)
			if err != nil {
				return err
			}
			_, err = s.CloseAndRecv()
			return err
		}, codes.Unimplemented, ""},
		{"connect failure is unavailable", func() error {
			_, err := tc.EmptyCall(ctx, &testgrpc.Empty{})
			return err
		}, codes.Unavailable, BodyConnFailure},
		{"no healthy upstream is unavailable", func() error {
			_, err := tc.UnaryCall(ctx, &testgrpc.SimpleRequest{})
			return err
		}, codes.Unavailable, BodyNoHealthyUpstream},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			st, _ := status.FromError(err)
			if st.Code() != tt.code || st.Message() != tt.message {
				t.Fatalf("got %v %q, want %v %q", st.Code(), st.Message(), tt.code, tt.message)
			}
		})
	}
}

func TestGRPCStatusMapping(t *testing.T) {
	tests := []struct {
		http int
		want codes.Code
	}{
		{400, codes.Internal}, {401, codes.Unauthenticated}, {403, codes.PermissionDenied},
		{404, codes.Unimplemented}, {429, codes.Unavailable}, {502, codes.Unavailable},
		{503, codes.Unavailable}, {504, codes.Unavailable}, {500, codes.Unknown}, {418, codes.Unknown},
	}
	for _, tc := range tests {
		if got := httpToGRPCStatus(tc.http); codes.Code(got) != tc.want {
			t.Errorf("httpToGRPCStatus(%d) = %v, want %v", tc.http, codes.Code(got), tc.want)
		}
	}
}

func TestGRPCContentTypeAndMessage(t *testing.T) {
	for _, tc := range []struct {
		ct   string
		want bool
	}{
		{"application/grpc", true}, {"application/grpc+proto", true}, {"Application/GRPC;charset=x", true},
		{"application/grpc-web", false}, {"application/grpcx", false}, {"text/plain", false}, {"", false},
	} {
		if got := isGRPCContentType(tc.ct); got != tc.want {
			t.Errorf("isGRPCContentType(%q) = %v, want %v", tc.ct, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"100%", "100%25"},
		{"caf\u00e9\n", "caf%C3%A9%0A"},
	} {
		if got := grpcPercentEncode(tc.in); got != tc.want {
			t.Errorf("grpcPercentEncode(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
