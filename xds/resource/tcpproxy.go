package resource

import (
	"errors"
	"fmt"
	"time"

	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/state"
)

func decodeTCPProxy(a *anypb.Any) (*state.TCPProxy, error) {
	var p tcpproxyv3.TcpProxy
	if err := a.UnmarshalTo(&p); err != nil {
		return nil, err
	}
	out := &state.TCPProxy{StatPrefix: p.GetStatPrefix()}
	switch cs := p.GetClusterSpecifier().(type) {
	case *tcpproxyv3.TcpProxy_Cluster:
		if cs.Cluster == "" {
			return nil, errAt("cluster", "must not be empty")
		}
		out.Cluster = cs.Cluster
	case *tcpproxyv3.TcpProxy_WeightedClusters:
		var total uint64
		for i, c := range cs.WeightedClusters.GetClusters() {
			if c.GetName() == "" {
				return nil, errAt(fmt.Sprintf("weighted_clusters.clusters[%d].name", i), "must not be empty")
			}
			if c.GetMetadataMatch() != nil {
				// Subset load balancing is not supported: ignoring the
				// match would send the entry's share to any host.
				return nil, errAt(fmt.Sprintf("weighted_clusters.clusters[%d].metadata_match", i), "is not supported")
			}
			total += uint64(c.GetWeight())
			out.WeightedClusters = append(out.WeightedClusters, state.WeightedCluster{Name: c.GetName(), Weight: c.GetWeight()})
		}
		if len(out.WeightedClusters) == 0 {
			return nil, errAt("weighted_clusters.clusters", "at least one cluster is required")
		}
		if total == 0 {
			return nil, errAt("weighted_clusters.clusters", "total weight must be greater than 0")
		}
	default:
		return nil, errors.New("cluster_specifier is required")
	}
	if p.GetTunnelingConfig() != nil {
		return nil, errAt("tunneling_config", "is not supported")
	}
	if p.GetMetadataMatch() != nil {
		return nil, errAt("metadata_match", "is not supported")
	}
	var err error
	if out.IdleTimeout, err = durationField("idle_timeout", p.GetIdleTimeout(), state.DefaultTCPIdleTimeout); err != nil {
		return nil, err
	}
	if out.MaxDownstreamConnectionDuration, err = durationField("max_downstream_connection_duration", p.GetMaxDownstreamConnectionDuration(), 0); err != nil {
		return nil, err
	}
	if d := out.MaxDownstreamConnectionDuration; p.GetMaxDownstreamConnectionDuration() != nil && d < time.Millisecond {
		// The proto's own rule: at least 1ms when set (Envoy rejects 0).
		return nil, errAt("max_downstream_connection_duration", "must be at least 1ms, got %v", d)
	}
	if out.AccessLogs, err = decodeAccessLogs(p.GetAccessLog()); err != nil {
		return nil, err
	}
	return out, nil
}
