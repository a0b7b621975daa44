package resource

import (
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

func TestDecodeRetryPolicy(t *testing.T) {
	p, err := decodeRetryPolicy(&routev3.RetryPolicy{
		RetryOn:              "5xx, unavailable,retriable-status-codes,http3-post-connect-failure",
		RetriableStatusCodes: []uint32{409},
		RetryHostPredicate:   []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts"}},
		PerTryTimeout:        durationpb.New(time.Second),
		RetryBackOff:         &routev3.RetryPolicy_RetryBackOff{BaseInterval: durationpb.New(10 * time.Millisecond)},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := state.Retry5xx | state.RetryGRPCUnavailable | state.RetryRetriableStatusCodes
	if p.RetryOn != want || p.NumRetries != 1 || !p.PreviousHosts || p.HostSelectionRetryMaxAttempts != 1 ||
		p.PerTryTimeout != time.Second || p.BackOffBase != 10*time.Millisecond || p.BackOffMax != 100*time.Millisecond {
		t.Errorf("decoded %+v", p)
	}
	bad := []struct {
		name string
		p    *routev3.RetryPolicy
		path string
	}{
		{"max below base", &routev3.RetryPolicy{RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
			BaseInterval: durationpb.New(time.Second), MaxInterval: durationpb.New(time.Millisecond)}}, "retry_back_off.max_interval"},
		{"no base", &routev3.RetryPolicy{RetryBackOff: &routev3.RetryPolicy_RetryBackOff{}}, "retry_back_off.base_interval"},
		{"unknown predicate", &routev3.RetryPolicy{RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "x"}}}, "retry_host_predicate[0].name"},
		{"request headers", &routev3.RetryPolicy{RetriableRequestHeaders: []*routev3.HeaderMatcher{{Name: "a"}}}, "retriable_request_headers"},
	}
	for _, tt := range bad {
		if _, err := decodeRetryPolicy(tt.p); err == nil || !strings.Contains(err.Error(), tt.path) {
			t.Errorf("%s: err %v, want one naming %s", tt.name, err, tt.path)
		}
	}
	p, err = decodeRetryPolicy(&routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(0)})
	if err != nil || p.NumRetries != 0 {
		t.Errorf("explicit num_retries 0: %+v %v", p, err)
	}
}

func TestDecodeMirrorPolicies(t *testing.T) {
	ms, err := decodeMirrorPolicies([]*routev3.RouteAction_RequestMirrorPolicy{
		{Cluster: "a"},
		{Cluster: "b", DisableShadowHostSuffixAppend: true, RuntimeFraction: &corev3.RuntimeFractionalPercent{
			DefaultValue: &typev3.FractionalPercent{Numerator: 25, Denominator: typev3.FractionalPercent_TEN_THOUSAND}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Numerator != 1 || ms[0].Denominator != 1 ||
		ms[1].Numerator != 25 || ms[1].Denominator != 10000 || !ms[1].DisableShadowHostSuffixAppend {
		t.Errorf("decoded %+v", ms)
	}
	if _, err := decodeMirrorPolicies([]*routev3.RouteAction_RequestMirrorPolicy{{}}); err == nil ||
		!strings.Contains(err.Error(), "request_mirror_policies[0].cluster") {
		t.Errorf("missing cluster: %v", err)
	}
}
