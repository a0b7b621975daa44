//lint:file-ignore SA1019 http_uri is deprecated in Envoy but is how the metadata server URL is configured.

package resource

import (
	"reflect"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	gcpauthnv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/gcp_authn/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshlet/meshlet/state"
)

func TestDecodeGCPAuthnFilter(t *testing.T) {
	def := state.GCPAuthnFilter{URI: state.DefaultGCPMetadataURI, Timeout: 10 * time.Second, CacheSize: 10,
		Header: "authorization", Prefix: "Bearer "}
	with := func(f func(*state.GCPAuthnFilter)) *state.GCPAuthnFilter { c := def; f(&c); return &c }
	tests := []struct {
		name    string
		cfg     *gcpauthnv3.GcpAuthnFilterConfig
		want    *state.GCPAuthnFilter
		wantErr string
	}{
		{"defaults", &gcpauthnv3.GcpAuthnFilterConfig{}, &def, ""},
		{"http_uri and timeout", &gcpauthnv3.GcpAuthnFilterConfig{
			HttpUri: &corev3.HttpUri{Uri: "http://127.0.0.1:9/id?audience=[AUDIENCE]", Timeout: durationpb.New(2 * time.Second)},
		}, with(func(c *state.GCPAuthnFilter) {
			c.URI, c.Timeout = "http://127.0.0.1:9/id?audience=[AUDIENCE]", 2*time.Second
		}), ""},
		{"timeout field wins", &gcpauthnv3.GcpAuthnFilterConfig{
			HttpUri: &corev3.HttpUri{Timeout: durationpb.New(2 * time.Second)}, Timeout: durationpb.New(3 * time.Second),
		}, with(func(c *state.GCPAuthnFilter) { c.Timeout = 3 * time.Second }), ""},
		{"retry policy defaults", &gcpauthnv3.GcpAuthnFilterConfig{RetryPolicy: &corev3.RetryPolicy{}},
			with(func(c *state.GCPAuthnFilter) { c.Retries, c.RetryBase, c.RetryMax = 1, time.Second, 10*time.Second }), ""},
		{"retry policy", &gcpauthnv3.GcpAuthnFilterConfig{RetryPolicy: &corev3.RetryPolicy{
			NumRetries:   wrapperspb.UInt32(3),
			RetryBackOff: &corev3.BackoffStrategy{BaseInterval: durationpb.New(100 * time.Millisecond), MaxInterval: durationpb.New(time.Second)},
		}}, with(func(c *state.GCPAuthnFilter) {
			c.Retries, c.RetryBase, c.RetryMax = 3, 100*time.Millisecond, time.Second
		}), ""},
		{"cache size", &gcpauthnv3.GcpAuthnFilterConfig{CacheConfig: &gcpauthnv3.TokenCacheConfig{CacheSize: wrapperspb.UInt64(100)}},
			with(func(c *state.GCPAuthnFilter) { c.CacheSize = 100 }), ""},
		{"cache disabled", &gcpauthnv3.GcpAuthnFilterConfig{CacheConfig: &gcpauthnv3.TokenCacheConfig{CacheSize: wrapperspb.UInt64(0)}},
			with(func(c *state.GCPAuthnFilter) { c.CacheSize = 0 }), ""},
		{"token header", &gcpauthnv3.GcpAuthnFilterConfig{TokenHeader: &gcpauthnv3.TokenHeader{
			Name: "X-Serverless-Authorization", ValuePrefix: "Bearer ", PreserveExisting: &gcpauthnv3.TokenHeader_PreserveExisting{}}},
			with(func(c *state.GCPAuthnFilter) { c.Header, c.PreserveExisting = "x-serverless-authorization", true }), ""},
		{"audience", &gcpauthnv3.GcpAuthnFilterConfig{Audience: &gcpauthnv3.Audience{Url: "https://svc"}},
			with(func(c *state.GCPAuthnFilter) { c.Audience = "https://svc" }), ""},
		{"bad uri", &gcpauthnv3.GcpAuthnFilterConfig{HttpUri: &corev3.HttpUri{Uri: "metadata/identity"}}, nil, "http_uri.uri"},
		{"huge cache", &gcpauthnv3.GcpAuthnFilterConfig{CacheConfig: &gcpauthnv3.TokenCacheConfig{CacheSize: wrapperspb.UInt64(1 << 40)}}, nil, "cache_config.cache_size"},
		{"zero backoff", &gcpauthnv3.GcpAuthnFilterConfig{RetryPolicy: &corev3.RetryPolicy{
			RetryBackOff: &corev3.BackoffStrategy{BaseInterval: durationpb.New(0)}}}, nil, "base_interval"},
		{"max below base", &gcpauthnv3.GcpAuthnFilterConfig{RetryPolicy: &corev3.RetryPolicy{
			RetryBackOff: &corev3.BackoffStrategy{BaseInterval: durationpb.New(time.Second), MaxInterval: durationpb.New(time.Millisecond)}}}, nil, "max_interval"},
		{"header without name", &gcpauthnv3.GcpAuthnFilterConfig{TokenHeader: &gcpauthnv3.TokenHeader{ValuePrefix: "x"}}, nil, "token_header.name"},
		{"metadata key", &gcpauthnv3.GcpAuthnFilterConfig{TokenMetadataKey: "tok"}, nil, "token_metadata_key"},
		{"access token audience", &gcpauthnv3.GcpAuthnFilterConfig{Audience: &gcpauthnv3.Audience{
			AccessToken: &gcpauthnv3.Audience_AccessToken{}}}, nil, "audience.access_token"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h, err := decodeHCMFilters(t, httpFilterOf(t, state.FilterGCPAuthn, tc.cfg))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "gcp_authn") {
					t.Fatalf("err = %v, want one naming gcp_authn and %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(h.Filters) != 1 || h.Filters[0].Name != state.FilterGCPAuthn {
				t.Fatalf("filters = %+v", h.Filters)
			}
			if got := h.Filters[0].GCPAuthn; !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestClusterGCPAudiences(t *testing.T) {
	typed := func(t *testing.T, a *gcpauthnv3.Audience) *anypb.Any { return mustAny(t, a) }
	tests := []struct {
		name    string
		md      func(t *testing.T) *corev3.Metadata
		want    state.GCPAudiences
		wantErr string
	}{
		{"none", func(*testing.T) *corev3.Metadata { return nil }, nil, ""},
		{"typed under filter names", func(t *testing.T) *corev3.Metadata {
			return &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{
				state.FilterGCPAuthn: typed(t, &gcpauthnv3.Audience{Url: "https://a"}),
				"my_gcp_filter":      typed(t, &gcpauthnv3.Audience{Url: "https://b"}),
				"other":              mustAny(t, &emptypb.Empty{}),
			}}
		}, state.GCPAudiences{state.FilterGCPAuthn: "https://a", "my_gcp_filter": "https://b"}, ""},
		{"struct form", func(t *testing.T) *corev3.Metadata {
			s, _ := structpb.NewStruct(map[string]any{"url": "https://s"})
			return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{state.FilterGCPAuthn: s}}
		}, state.GCPAudiences{state.FilterGCPAuthn: "https://s"}, ""},
		{"typed wins over struct", func(t *testing.T) *corev3.Metadata {
			s, _ := structpb.NewStruct(map[string]any{"url": "https://s"})
			return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{state.FilterGCPAuthn: s},
				TypedFilterMetadata: map[string]*anypb.Any{state.FilterGCPAuthn: typed(t, &gcpauthnv3.Audience{Url: "https://t"})}}
		}, state.GCPAudiences{state.FilterGCPAuthn: "https://t"}, ""},
		{"struct without url", func(t *testing.T) *corev3.Metadata {
			s, _ := structpb.NewStruct(map[string]any{"audience_url": "https://s"})
			return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{state.FilterGCPAuthn: s}}
		}, nil, "envoy.filters.http.gcp_authn.url"},
		{"typed empty url", func(t *testing.T) *corev3.Metadata {
			return &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{"f": typed(t, &gcpauthnv3.Audience{})}}
		}, nil, `typed_filter_metadata["f"].url`},
		{"bound jwt", func(t *testing.T) *corev3.Metadata {
			return &corev3.Metadata{TypedFilterMetadata: map[string]*anypb.Any{"f": typed(t, &gcpauthnv3.Audience{Url: "x", BoundJwt: &gcpauthnv3.Audience_BoundJwt{}})}}
		}, nil, "bound_jwt"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := &clusterv3.Cluster{Name: "c", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}, Metadata: tc.md(t)}
			got, err := DecodeCluster(c)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), `cluster "c": metadata`) {
					t.Fatalf("err = %v, want one naming the cluster and %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.GCPAudiences, tc.want) {
				t.Fatalf("audiences = %v, want %v", got.GCPAudiences, tc.want)
			}
			if len(tc.want) > 0 {
				if a, ok := got.GCPAudiences.Lookup("unnamed"); ok != (tc.want[state.FilterGCPAuthn] != "") || a != tc.want[state.FilterGCPAuthn] {
					t.Fatalf("Lookup fallback = %q %v", a, ok)
				}
			}
		})
	}
}
