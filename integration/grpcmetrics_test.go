package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// TestMetricsGRPCMessages: istio_request_messages_total and
// istio_response_messages_total count the gRPC messages of each stream
// through the real binary: a client stream of 4 requests answered once,
// and one request answered by a stream of 3.
func TestMetricsGRPCMessages(t *testing.T) {
	cp := startControlPlane(t)
	g := startGRPCBackend(t, "g")
	listener := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cp.set(
		httpListener(t, "grpc", listener, "grpc"),
		routeConfig("grpc",
			grpcRoute("/grpc.testing.TestService/StreamingInputCall", "gin"),
			grpcRoute("/grpc.testing.TestService/StreamingOutputCall", "gout"),
			grpcRoute("/grpc.testing.TestService/", "g")),
		edsCluster("g", clusterv3.Cluster_ROUND_ROBIN, true), endpoints(t, "g", g),
		edsCluster("gin", clusterv3.Cluster_ROUND_ROBIN, true), endpoints(t, "gin", g),
		edsCluster("gout", clusterv3.Cluster_ROUND_ROBIN, true), endpoints(t, "gout", g),
	)
	metrics := startProxyWithMetrics(t, cp)
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

	in, err := tc.StreamingInputCall(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if err := in.Send(&testgrpc.StreamingInputCallRequest{Payload: &testgrpc.Payload{Body: make([]byte, 3000)}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := in.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	out, err := tc.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{ResponseParameters: []*testgrpc.ResponseParameters{
		{Size: 10}, {Size: 20000}, {Size: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		if _, err := out.Recv(); err != nil {
			break
		}
		n++
	}
	if n != 3 {
		t.Fatalf("server stream gave %d messages, want 3", n)
	}
	for _, c := range []struct {
		cluster   string
		req, resp float64
	}{{"gin", 4, 1}, {"gout", 1, 3}} {
		want := map[string]string{"destination_service": c.cluster, "request_protocol": "grpc"}
		eventually(t, 5*time.Second, func() error {
			fams := scrape(t, "http://"+metrics+"/stats/prometheus")
			req := sumWhere(fams, "istio_request_messages_total", want)
			resp := sumWhere(fams, "istio_response_messages_total", want)
			if req != c.req || resp != c.resp {
				return fmt.Errorf("%s: request messages %v, response messages %v; want %v and %v", c.cluster, req, resp, c.req, c.resp)
			}
			return nil
		})
	}
}
