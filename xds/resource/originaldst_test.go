package resource

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func origDstCluster(mod func(*clusterv3.Cluster)) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 "passthrough",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
	}
	if mod != nil {
		mod(c)
	}
	return c
}

func TestDecodeClusterOriginalDst(t *testing.T) {
	tests := []struct {
		name        string
		mod         func(*clusterv3.Cluster)
		wantHeader  string
		wantCleanup time.Duration
	}{
		{name: "defaults"},
		{
			name:        "cleanup interval",
			mod:         func(c *clusterv3.Cluster) { c.CleanupInterval = durationpb.New(30 * time.Second) },
			wantCleanup: 30 * time.Second,
		},
		{
			name: "header default name",
			mod: func(c *clusterv3.Cluster) {
				c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true}}
			},
			wantHeader: "x-envoy-original-dst-host",
		},
		{
			name: "header custom name lower-cased",
			mod: func(c *clusterv3.Cluster) {
				c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true, HttpHeaderName: "X-Dest"}}
			},
			wantHeader: "x-dest",
		},
		{
			name: "name without use_http_header is unused",
			mod: func(c *clusterv3.Cluster) {
				c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{HttpHeaderName: "x-dest"}}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeCluster(origDstCluster(tt.mod))
			if err != nil {
				t.Fatal(err)
			}
			if got.OriginalDstHeader != tt.wantHeader {
				t.Errorf("OriginalDstHeader = %q, want %q", got.OriginalDstHeader, tt.wantHeader)
			}
			if got.OriginalDstCleanupInterval != tt.wantCleanup {
				t.Errorf("OriginalDstCleanupInterval = %v, want %v", got.OriginalDstCleanupInterval, tt.wantCleanup)
			}
		})
	}
}

func TestDecodeClusterOriginalDstErrors(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*clusterv3.Cluster)
		want string
	}{
		{
			name: "zero cleanup interval",
			mod:  func(c *clusterv3.Cluster) { c.CleanupInterval = durationpb.New(0) },
			want: `cluster "passthrough": cleanup_interval: must be greater than 0`,
		},
		{
			name: "port override",
			mod: func(c *clusterv3.Cluster) {
				c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{UpstreamPortOverride: wrapperspb.UInt32(70000)}}
			},
			want: "original_dst_lb_config.upstream_port_override: 70000 is not a port",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeCluster(origDstCluster(tt.mod))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestDecodeClusterOriginalDstSettingsIgnoredElsewhere(t *testing.T) {
	c := edsCluster()
	c.CleanupInterval = durationpb.New(time.Second)
	c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true}}
	got, err := DecodeCluster(c)
	if err != nil {
		t.Fatal(err)
	}
	if got.OriginalDstHeader != "" || got.OriginalDstCleanupInterval != 0 {
		t.Errorf("EDS cluster got ORIGINAL_DST settings: header %q cleanup %v", got.OriginalDstHeader, got.OriginalDstCleanupInterval)
	}
}
