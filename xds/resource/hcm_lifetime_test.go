package resource

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// TestDecodeHCMConnectionLifetime: max_connection_duration and
// drain_timeout decode (unset: no limit, and zero, which the data plane
// reads as Envoy's 5s); an explicit 0s drain_timeout is kept apart as
// negative; negative or invalid
// durations are rejected with their field path.
func TestDecodeHCMConnectionLifetime(t *testing.T) {
	for _, tc := range []struct {
		name      string
		maxDur    *durationpb.Duration
		drain     *durationpb.Duration
		wantMax   time.Duration
		wantDrain time.Duration
		wantErr   string
	}{
		{name: "unset"},
		{name: "set", maxDur: durationpb.New(time.Hour), drain: durationpb.New(30 * time.Second), wantMax: time.Hour, wantDrain: 30 * time.Second},
		{name: "zero duration is no limit", maxDur: durationpb.New(0)},
		{name: "zero drain is no grace", drain: durationpb.New(0), wantDrain: -1},
		{name: "negative duration", maxDur: durationpb.New(-time.Second), wantErr: "common_http_protocol_options.max_connection_duration"},
		{name: "negative drain", drain: durationpb.New(-time.Second), wantErr: "drain_timeout"},
		{name: "invalid drain", drain: &durationpb.Duration{Seconds: 1, Nanos: -5}, wantErr: "drain_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := rdsHCM(t, "r")
			if tc.maxDur != nil {
				h.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxConnectionDuration: tc.maxDur}
			}
			h.DrainTimeout = tc.drain
			got, err := decodeHCM(mustAny(t, h))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.MaxConnectionDuration != tc.wantMax || got.DrainTimeout != tc.wantDrain {
				t.Fatalf("MaxConnectionDuration %v, DrainTimeout %v; want %v, %v",
					got.MaxConnectionDuration, got.DrainTimeout, tc.wantMax, tc.wantDrain)
			}
		})
	}
}

// TestDecodeInternalOnlyHeaders: a route configuration's
// internal_only_headers are lower-cased, deduplicated and also kept in
// net/http's canonical form; names that are not header tokens are
// rejected with their index.
func TestDecodeInternalOnlyHeaders(t *testing.T) {
	for _, tc := range []struct {
		name      string
		in        []string
		wantLower []string
		wantCanon []string
		wantErr   string
	}{
		{name: "none"},
		{name: "normalised", in: []string{"X-Internal", "x-debug-token", "x-INTERNAL"},
			wantLower: []string{"x-internal", "x-debug-token"}, wantCanon: []string{"X-Internal", "X-Debug-Token"}},
		{name: "empty name", in: []string{"x-a", ""}, wantErr: "internal_only_headers[1]"},
		{name: "pseudo header", in: []string{":authority"}, wantErr: "internal_only_headers[0]"},
		{name: "space", in: []string{"x a"}, wantErr: "internal_only_headers[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := &routev3.RouteConfiguration{Name: "r", InternalOnlyHeaders: tc.in}
			got, err := decodeRouteConfig(rc)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one naming %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.InternalOnlyHeaders, tc.wantLower) || !slices.Equal(got.InternalOnlyHeaderKeys, tc.wantCanon) {
				t.Fatalf("got %q / %q, want %q / %q", got.InternalOnlyHeaders, got.InternalOnlyHeaderKeys, tc.wantLower, tc.wantCanon)
			}
		})
	}
}
