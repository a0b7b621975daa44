package resource

import (
	"reflect"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	nlrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/local_ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

func httpFilterOf(t testing.TB, name string, m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, m)}}
}

func pct(n uint32, d typev3.FractionalPercent_DenominatorType) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: d}
}

func decodeHCMFilters(t *testing.T, filters ...*hcmv3.HttpFilter) (*state.HTTPConnectionManager, error) {
	t.Helper()
	h := rdsHCM(t, "r")
	h.HttpFilters = append(filters, h.HttpFilters...)
	l := tcpListener(t)
	l.FilterChains[0].Filters[0] = hcmFilter(t, h)
	got, err := DecodeListener(l)
	if err != nil {
		return nil, err
	}
	return got.FilterChains[0].HTTP, nil
}

func TestDecodeHTTPFilters(t *testing.T) {
	fault := &faultv3.HTTPFault{
		Delay: &faultcommonv3.FaultDelay{
			FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: durationpb.New(2 * time.Second)},
			Percentage:         pct(25, typev3.FractionalPercent_TEN_THOUSAND),
		},
		Abort: &faultv3.FaultAbort{
			ErrorType:  &faultv3.FaultAbort_HttpStatus{HttpStatus: 503},
			Percentage: pct(30, typev3.FractionalPercent_HUNDRED),
		},
		UpstreamCluster: "c",
		DownstreamNodes: []string{"n1"},
		MaxActiveFaults: wrapperspb.UInt32(7),
		Headers: []*routev3.HeaderMatcher{{Name: "x-chaos",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}},
	}
	rl := &lrlv3.LocalRateLimit{
		StatPrefix:     "rl",
		TokenBucket:    &typev3.TokenBucket{MaxTokens: 3, TokensPerFill: wrapperspb.UInt32(2), FillInterval: durationpb.New(time.Second)},
		FilterEnabled:  &corev3.RuntimeFractionalPercent{DefaultValue: pct(100, typev3.FractionalPercent_HUNDRED)},
		FilterEnforced: &corev3.RuntimeFractionalPercent{DefaultValue: pct(50, typev3.FractionalPercent_MILLION)},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-limited", Value: "1"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD}},
	}
	got, err := decodeHCMFilters(t,
		httpFilterOf(t, "envoy.filters.http.fault", fault),
		&hcmv3.HttpFilter{Name: "envoy.filters.http.cors", IsOptional: true},
		httpFilterOf(t, "my.rl", rl))
	if err != nil {
		t.Fatal(err)
	}
	want := []*state.HTTPFilter{
		{Name: "envoy.filters.http.fault", Fault: &state.FaultFilter{
			Delay:           &state.FaultDelay{Fixed: 2 * time.Second, Percentage: state.Fraction{Numerator: 25, Denominator: state.PerTenThousand}},
			Abort:           &state.FaultAbort{HTTPStatus: 503, Percentage: state.Fraction{Numerator: 30, Denominator: state.PerHundred}},
			UpstreamCluster: "c", DownstreamNodes: []string{"n1"}, MaxActiveFaults: 7, HasMaxActive: true,
			Headers: []state.HeaderMatcher{{Name: "x-chaos", Kind: state.HeaderPresent, Present: true}},
		}},
		{Name: "my.rl", LocalRateLimit: &state.LocalRateLimit{
			StatPrefix: "rl", Status: 429,
			Bucket:  &state.TokenBucket{MaxTokens: 3, TokensPerFill: 2, FillInterval: time.Second},
			Enabled: state.Fraction{Numerator: 100, Denominator: state.PerHundred}, Enforced: state.Fraction{Numerator: 50, Denominator: state.PerMillion},
			ResponseHeadersToAdd: []state.HeaderValueOption{{Key: "x-limited", Value: "1", Action: state.OverwriteIfExistsOrAdd}},
		}},
	}
	if !reflect.DeepEqual(got.Filters, want) {
		t.Fatalf("Filters:\n got %+v %+v\nwant %+v %+v", got.Filters[0], got.Filters[1], want[0], want[1])
	}
	if wantNames := []string{"envoy.filters.http.fault", "my.rl", routerFilterName}; !reflect.DeepEqual(got.HTTPFilters, wantNames) {
		t.Fatalf("HTTPFilters = %v, want %v", got.HTTPFilters, wantNames)
	}
}

func TestDecodeHTTPFilterVariants(t *testing.T) {
	tests := []struct {
		name string
		f    proto.Message
		want *state.HTTPFilter
	}{
		{"grpc abort and header delay", &faultv3.HTTPFault{
			Delay: &faultcommonv3.FaultDelay{FaultDelaySecifier: &faultcommonv3.FaultDelay_HeaderDelay_{HeaderDelay: &faultcommonv3.FaultDelay_HeaderDelay{}},
				Percentage: pct(100, typev3.FractionalPercent_HUNDRED)},
			Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14}},
		}, &state.HTTPFilter{Name: "f", Fault: &state.FaultFilter{
			Delay: &state.FaultDelay{FromHeader: true, Percentage: state.Fraction{Numerator: 100, Denominator: state.PerHundred}},
			Abort: &state.FaultAbort{GRPCStatus: 14, HasGRPCStatus: true, Percentage: state.Fraction{Numerator: 0, Denominator: state.PerHundred}},
		}}},
		{"header abort", &faultv3.HTTPFault{
			Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HeaderAbort_{HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}},
				Percentage: pct(1, typev3.FractionalPercent_MILLION)},
		}, &state.HTTPFilter{Name: "f", Fault: &state.FaultFilter{
			Abort: &state.FaultAbort{FromHeader: true, Percentage: state.Fraction{Numerator: 1, Denominator: state.PerMillion}},
		}}},
		{"rate limit defaults: off, 429, no bucket", &lrlv3.LocalRateLimit{StatPrefix: "x"},
			&state.HTTPFilter{Name: "f", LocalRateLimit: &state.LocalRateLimit{StatPrefix: "x", Status: 429,
				Enabled: state.Fraction{Numerator: 0, Denominator: state.PerHundred}, Enforced: state.Fraction{Numerator: 0, Denominator: state.PerHundred}}}},
		{"rate limit custom status", &lrlv3.LocalRateLimit{StatPrefix: "x", Status: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}},
			&state.HTTPFilter{Name: "f", LocalRateLimit: &state.LocalRateLimit{StatPrefix: "x", Status: 503,
				Enabled: state.Fraction{Numerator: 0, Denominator: state.PerHundred}, Enforced: state.Fraction{Numerator: 0, Denominator: state.PerHundred}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hf := httpFilterOf(t, "f", tt.f)
			got, err := decodeHCMFilters(t, hf)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.Filters, []*state.HTTPFilter{tt.want}) {
				t.Fatalf("got %+v\nwant %+v", got.Filters[0], tt.want)
			}
		})
	}
}

func TestDecodeHTTPFilterErrors(t *testing.T) {
	tb := &typev3.TokenBucket{MaxTokens: 1, FillInterval: durationpb.New(time.Second)}
	tests := []struct {
		name string
		f    *hcmv3.HttpFilter
		want []string
	}{
		{"unknown required", &hcmv3.HttpFilter{Name: "envoy.filters.http.ext_authz"},
			[]string{`http_filters[0]: HTTP filter "envoy.filters.http.ext_authz" is not supported`}},
		{"abort status range", httpFilterOf(t, "f", &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 700}}}),
			[]string{"http_filters[0].typed_config: fault: abort.http_status: 700 is not in [200, 600)"}},
		{"abort without type", httpFilterOf(t, "f", &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{}}),
			[]string{"abort.error_type"}},
		{"delay without type", httpFilterOf(t, "f", &faultv3.HTTPFault{Delay: &faultcommonv3.FaultDelay{}}),
			[]string{"delay.fault_delay_secifier"}},
		{"response rate limit", httpFilterOf(t, "f", &faultv3.HTTPFault{ResponseRateLimit: &faultcommonv3.FaultRateLimit{}}),
			[]string{"fault: response_rate_limit: is not supported"}},
		{"bad denominator", httpFilterOf(t, "f", &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{
			ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 503}, Percentage: &typev3.FractionalPercent{Denominator: 9}}}),
			[]string{"abort.percentage.denominator: unknown value 9"}},
		{"rl stat prefix", httpFilterOf(t, "f", &lrlv3.LocalRateLimit{}), []string{"local_ratelimit: stat_prefix: is required"}},
		{"rl zero max tokens", httpFilterOf(t, "f", &lrlv3.LocalRateLimit{StatPrefix: "x", TokenBucket: &typev3.TokenBucket{FillInterval: durationpb.New(time.Second)}}),
			[]string{"token_bucket.max_tokens: must be at least 1"}},
		{"rl no interval", httpFilterOf(t, "f", &lrlv3.LocalRateLimit{StatPrefix: "x", TokenBucket: &typev3.TokenBucket{MaxTokens: 1}}),
			[]string{"token_bucket.fill_interval: is required"}},
		{"rl tiny interval", httpFilterOf(t, "f", &lrlv3.LocalRateLimit{StatPrefix: "x", TokenBucket: &typev3.TokenBucket{MaxTokens: 1, FillInterval: durationpb.New(time.Microsecond)}}),
			[]string{"token_bucket.fill_interval: 1µs is below 1ms"}},
		{"rl descriptors", httpFilterOf(t, "f", &lrlv3.LocalRateLimit{StatPrefix: "x", TokenBucket: tb,
			Descriptors: []*ratelimitv3.LocalRateLimitDescriptor{{}}}),
			[]string{"local_ratelimit: descriptors: are not supported"}},
		{"rl fine", httpFilterOf(t, "f", &lrlv3.LocalRateLimit{StatPrefix: "x", TokenBucket: tb}), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeHCMFilters(t, tt.f)
			if tt.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantErr(t, err, tt.want...)
		})
	}
}

func TestDecodeFilterOverrides(t *testing.T) {
	fault := &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 418},
		Percentage: pct(100, typev3.FractionalPercent_HUNDRED)}}
	rc := simpleRouteConfig()
	rc.VirtualHosts[0].TypedPerFilterConfig = map[string]*anypb.Any{
		"envoy.filters.http.fault":  mustAny(t, fault),
		"envoy.filters.http.cors":   mustAny(t, &routev3.Route{}), // not ours: ignored
		"envoy.filters.http.lrl":    mustAny(t, &routev3.FilterConfig{Disabled: true}),
		"envoy.filters.http.nested": mustAny(t, &routev3.FilterConfig{Config: mustAny(t, fault)}),
	}
	rc.VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{
		"f": mustAny(t, &lrlv3.LocalRateLimit{StatPrefix: "route"}),
	}
	got, err := DecodeRouteConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	wantFault := &state.FaultFilter{Abort: &state.FaultAbort{HTTPStatus: 418, Percentage: state.Fraction{Numerator: 100, Denominator: state.PerHundred}}}
	wantVH := map[string]*state.FilterOverride{
		"envoy.filters.http.fault":  {Fault: wantFault},
		"envoy.filters.http.lrl":    {Disabled: true},
		"envoy.filters.http.nested": {Fault: wantFault},
	}
	if !reflect.DeepEqual(got.VirtualHosts[0].FilterOverrides, wantVH) {
		t.Fatalf("vhost overrides = %+v", got.VirtualHosts[0].FilterOverrides)
	}
	if o := got.VirtualHosts[0].Routes[0].FilterOverrides["f"]; o == nil || o.LocalRateLimit == nil || o.LocalRateLimit.StatPrefix != "route" {
		t.Fatalf("route override = %+v", o)
	}

	rc.VirtualHosts[0].Routes[0].TypedPerFilterConfig["f"] = mustAny(t, &lrlv3.LocalRateLimit{})
	_, err = DecodeRouteConfig(rc)
	wantErr(t, err, `virtual_hosts[0].routes[0].typed_per_filter_config["f"]: local_ratelimit: stat_prefix: is required`)
}

func TestDecodeNetworkRateLimit(t *testing.T) {
	rl := &nlrlv3.LocalRateLimit{StatPrefix: "conn",
		TokenBucket: &typev3.TokenBucket{MaxTokens: 2, FillInterval: durationpb.New(time.Minute)}}
	l := tcpListener(t)
	fc := l.FilterChains[0]
	fc.Filters = append([]*listenerv3.Filter{{Name: "envoy.filters.network.local_ratelimit",
		ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, rl)}}}, fc.Filters...)
	got, err := DecodeListener(l)
	if err != nil {
		t.Fatal(err)
	}
	want := []*state.NetworkRateLimit{{StatPrefix: "conn", Bucket: state.TokenBucket{MaxTokens: 2, TokensPerFill: 1, FillInterval: time.Minute}}}
	if c := got.FilterChains[0]; !reflect.DeepEqual(c.RateLimits, want) || c.TCPProxy == nil {
		t.Fatalf("chain = %+v", c)
	}

	// Runtime-disabled: decoded away.
	rl.RuntimeEnabled = &corev3.RuntimeFeatureFlag{DefaultValue: wrapperspb.Bool(false), RuntimeKey: "k"}
	fc.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, rl)}
	if got, err = DecodeListener(l); err != nil || len(got.FilterChains[0].RateLimits) != 0 {
		t.Fatalf("disabled: %v, %+v", err, got)
	}

	// A rate limit as the only (terminal) filter is an error.
	rl.RuntimeEnabled = nil
	fc.Filters = fc.Filters[:1]
	fc.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, rl)}
	_, err = DecodeListener(l)
	wantErr(t, err, "filters[0].typed_config: network filter")

	rl.TokenBucket = nil
	fc.Filters = append(fc.Filters, tcpListener(t).FilterChains[0].Filters[0])
	fc.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, rl)}
	_, err = DecodeListener(l)
	wantErr(t, err, "filters[0].typed_config: local_ratelimit: token_bucket: is required")
}
