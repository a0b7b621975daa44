package resource

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
)

// TestDecodeTCPProxyRejects: tcp_proxy fields meshlet cannot honour NACK
// with their field path instead of being ignored.
func TestDecodeTCPProxyRejects(t *testing.T) {
	tests := []struct {
		name string
		p    *tcpproxyv3.TcpProxy
		want string
	}{
		{"weighted entry metadata_match", &tcpproxyv3.TcpProxy{
			ClusterSpecifier: &tcpproxyv3.TcpProxy_WeightedClusters{WeightedClusters: &tcpproxyv3.TcpProxy_WeightedCluster{
				Clusters: []*tcpproxyv3.TcpProxy_WeightedCluster_ClusterWeight{
					{Name: "a", Weight: 1},
					{Name: "b", Weight: 1, MetadataMatch: &corev3.Metadata{}},
				},
			}},
		}, "tcp_proxy: weighted_clusters.clusters[1].metadata_match: is not supported"},
		{"top-level metadata_match", &tcpproxyv3.TcpProxy{
			ClusterSpecifier: &tcpproxyv3.TcpProxy_Cluster{Cluster: "a"},
			MetadataMatch:    &corev3.Metadata{},
		}, "tcp_proxy: metadata_match: is not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := tcpListener(t)
			l.FilterChains[0].Filters[0] = tcpProxyFilter(t, tc.p)
			_, err := DecodeListener(l)
			wantErr(t, err, tc.want)
		})
	}
}
