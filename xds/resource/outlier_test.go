package resource

import (
	"reflect"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

func TestDecodeOutlierDetection(t *testing.T) {
	c := edsCluster()
	if out, err := DecodeCluster(c); err != nil || out.OutlierDetection != nil || out.CircuitBreakers != nil || out.HealthChecks != nil {
		t.Fatalf("no policy: %+v %v", out, err)
	}
	c.OutlierDetection = &clusterv3.OutlierDetection{}
	out, err := DecodeCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	want := &state.OutlierDetection{
		Consecutive5xx: 5, ConsecutiveGatewayFailure: 5, ConsecutiveLocalOriginFailure: 5,
		Interval: 10 * time.Second, BaseEjectionTime: 30 * time.Second, MaxEjectionTime: 300 * time.Second,
		MaxEjectionPercent: 10, EnforcingConsecutive5xx: 100, EnforcingConsecutiveLocalOriginFailure: 100,
		EnforcingSuccessRate: 100, EnforcingLocalOriginSuccessRate: 100,
		SuccessRateMinimumHosts: 5, SuccessRateRequestVolume: 100, SuccessRateStdevFactor: 1900,
		FailurePercentageThreshold: 85, FailurePercentageMinimumHosts: 5, FailurePercentageRequestVolume: 50,
	}
	if !reflect.DeepEqual(out.OutlierDetection, want) {
		t.Fatalf("defaults:\n got %+v\nwant %+v", out.OutlierDetection, want)
	}
	c.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx:                    wrapperspb.UInt32(0),
		BaseEjectionTime:                   durationpb.New(400 * time.Second),
		MaxEjectionPercent:                 wrapperspb.UInt32(100),
		SplitExternalLocalOriginErrors:     true,
		AlwaysEjectOneHost:                 wrapperspb.Bool(true),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(50),
	}
	out, err = DecodeCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	od := out.OutlierDetection
	if od.Consecutive5xx != 0 || od.MaxEjectionTime != 400*time.Second || od.MaxEjectionPercent != 100 ||
		!od.SplitExternalLocalOriginErrors || !od.AlwaysEjectOneHost || od.EnforcingConsecutiveGatewayFailure != 50 {
		t.Fatalf("explicit values: %+v", od)
	}
	for _, tc := range []struct {
		od   *clusterv3.OutlierDetection
		frag string
	}{
		{&clusterv3.OutlierDetection{MaxEjectionPercent: wrapperspb.UInt32(101)}, "outlier_detection.max_ejection_percent"},
		{&clusterv3.OutlierDetection{Interval: durationpb.New(0)}, "outlier_detection.interval"},
		{&clusterv3.OutlierDetection{BaseEjectionTime: durationpb.New(time.Minute), MaxEjectionTime: durationpb.New(time.Second)}, "max_ejection_time"},
		{&clusterv3.OutlierDetection{Monitors: []*corev3.TypedExtensionConfig{{Name: "x"}}}, "monitors"},
	} {
		c.OutlierDetection = tc.od
		_, err := DecodeCluster(c)
		wantErr(t, err, `cluster "c"`, tc.frag)
	}
}

func TestDecodeCircuitBreakers(t *testing.T) {
	c := edsCluster()
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{
		{Priority: corev3.RoutingPriority_HIGH, MaxRequests: wrapperspb.UInt32(7)},
		{MaxRequests: wrapperspb.UInt32(2), MaxConnectionPools: wrapperspb.UInt32(4),
			RetryBudget: &clusterv3.CircuitBreakers_Thresholds_RetryBudget{}},
	}}
	out, err := DecodeCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	want := &state.CircuitBreakers{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 2, MaxRetries: 3, MaxConnectionPools: 4,
		RetryBudget: &state.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3}}
	if !reflect.DeepEqual(out.CircuitBreakers, want) {
		t.Fatalf("got %+v", out.CircuitBreakers)
	}
	c.CircuitBreakers.Thresholds[1].RetryBudget.BudgetPercent = &typev3.Percent{Value: 120}
	_, err = DecodeCluster(c)
	wantErr(t, err, "circuit_breakers.thresholds[1].retry_budget.budget_percent")
}

func TestDecodeHealthChecks(t *testing.T) {
	base := func(mod func(*corev3.HealthCheck)) *corev3.HealthCheck {
		h := &corev3.HealthCheck{
			Timeout: durationpb.New(time.Second), Interval: durationpb.New(5 * time.Second),
			UnhealthyThreshold: wrapperspb.UInt32(3), HealthyThreshold: wrapperspb.UInt32(2),
			HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{
				Path: "/healthz", Host: "svc",
				ExpectedStatuses: []*typev3.Int64Range{{Start: 200, End: 300}},
			}},
		}
		if mod != nil {
			mod(h)
		}
		return h
	}
	c := edsCluster()
	c.HealthChecks = []*corev3.HealthCheck{base(nil)}
	out, err := DecodeCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	want := []state.HealthCheck{{
		Kind: state.HealthCheckHTTP, Timeout: time.Second, Interval: 5 * time.Second,
		UnhealthyThreshold: 3, HealthyThreshold: 2, NoTrafficInterval: 60 * time.Second,
		UnhealthyInterval: 5 * time.Second, UnhealthyEdgeInterval: 5 * time.Second, HealthyEdgeInterval: 5 * time.Second,
		HTTP: &state.HTTPHealthCheck{Host: "svc", Path: "/healthz", ExpectedStatuses: []state.StatusRange{{Start: 200, End: 300}}},
	}}
	if !reflect.DeepEqual(out.HealthChecks, want) {
		t.Fatalf("got  %+v\nwant %+v", out.HealthChecks[0], want[0])
	}
	c.HealthChecks = []*corev3.HealthCheck{base(func(h *corev3.HealthCheck) {
		h.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{
			Send:    &corev3.HealthCheck_Payload{Payload: &corev3.HealthCheck_Payload_Text{Text: "70696e67"}},
			Receive: []*corev3.HealthCheck_Payload{{Payload: &corev3.HealthCheck_Payload_Binary{Binary: []byte("pong")}}},
		}}
	})}
	if out, err = DecodeCluster(c); err != nil || string(out.HealthChecks[0].TCP.Send) != "ping" || string(out.HealthChecks[0].TCP.Receive[0]) != "pong" {
		t.Fatalf("tcp: %+v %v", out, err)
	}
	c.HealthChecks = []*corev3.HealthCheck{base(func(h *corev3.HealthCheck) {
		h.HealthChecker = &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{ServiceName: "echo", Authority: "a"}}
	})}
	if out, err = DecodeCluster(c); err != nil || *out.HealthChecks[0].GRPC != (state.GRPCHealthCheck{ServiceName: "echo", Authority: "a"}) {
		t.Fatalf("grpc: %+v %v", out, err)
	}
	for _, tc := range []struct {
		hcs  []*corev3.HealthCheck
		frag string
	}{
		{[]*corev3.HealthCheck{base(nil), base(nil)}, "only one health check"},
		{[]*corev3.HealthCheck{base(func(h *corev3.HealthCheck) { h.Timeout = nil })}, "health_checks[0].timeout"},
		{[]*corev3.HealthCheck{base(func(h *corev3.HealthCheck) { h.HealthyThreshold = nil })}, "healthy_threshold"},
		{[]*corev3.HealthCheck{base(func(h *corev3.HealthCheck) { h.HealthChecker = nil })}, "health_checker"},
		{[]*corev3.HealthCheck{base(func(h *corev3.HealthCheck) { h.GetHttpHealthCheck().Path = "" })}, "http_health_check.path"},
		{[]*corev3.HealthCheck{base(func(h *corev3.HealthCheck) {
			h.GetHttpHealthCheck().ExpectedStatuses = []*typev3.Int64Range{{Start: 300, End: 200}}
		})}, "expected_statuses[0]"},
		{[]*corev3.HealthCheck{base(func(h *corev3.HealthCheck) {
			h.HealthChecker = &corev3.HealthCheck_TcpHealthCheck_{TcpHealthCheck: &corev3.HealthCheck_TcpHealthCheck{
				Send: &corev3.HealthCheck_Payload{Payload: &corev3.HealthCheck_Payload_Text{Text: "zz"}}}}
		})}, "tcp_health_check.send.text"},
		{[]*corev3.HealthCheck{base(func(h *corev3.HealthCheck) { h.AltPort = wrapperspb.UInt32(1) })}, "alt_port"},
	} {
		c.HealthChecks = tc.hcs
		_, err := DecodeCluster(c)
		wantErr(t, err, tc.frag)
	}
}
