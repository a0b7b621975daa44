package echo

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// newGRPCServer serves only grpc.health.v1.Health, reporting SERVING for
// the whole server, and tags every call (unary Check and streaming Watch)
// with the version in header metadata. The health service is enough for a
// caller to see which backend a proxy picked; the interop TestService is
// deliberately not linked: it pulls oauth2/google credentials and the
// interop descriptors into every binary importing echo (cmd/ztunnel) and
// costs several MB of resident memory in each proxy process.
func newGRPCServer(version string) *grpc.Server {
	md := metadata.Pairs(HeaderVersion, version)
	s := grpc.NewServer(
		grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			_ = grpc.SetHeader(ctx, md)
			return h(ctx, req)
		}),
		grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			_ = ss.SetHeader(md)
			return h(srv, ss)
		}),
	)
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	return s
}
